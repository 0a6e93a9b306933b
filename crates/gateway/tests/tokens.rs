//! Which keys make which tokens (issue 13): user tokens from the gateway's
//! secret or an identity provider's JWKS (RS256, ES256; `iss` and `aud`
//! checked; rotation and removal followed), service tokens only from the
//! service key. The JWKS is served over real HTTP on 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use im_gateway::auth::{self, AuthError, Claims, JwksSettings, KeySettings, Verifier};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const USER_SECRET: &str = "tokens-test-user-key-5e0d7f1c2a9b4e63";
const SERVICE_SECRET: &str = "tokens-test-service-key-a41c9e7b02d3f85";
const ISSUER: &str = "https://id.example.test";
const AUDIENCE: &str = "im-pipeline";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// An ES256 key made here: its signing key and its JWK.
fn es256_key(kid: &str) -> (EncodingKey, Value) {
    let key = rcgen::KeyPair::generate().unwrap();
    let raw = key.public_key_raw();
    assert_eq!(raw.len(), 65, "an uncompressed P-256 point");
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..]),
                     "kid": kid, "alg": "ES256", "use": "sig"});
    (
        EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
        jwk,
    )
}

/// The RSA test key (a fixture: ring cannot make RSA keys) and its JWK.
fn rs256_key(kid: &str) -> (EncodingKey, Value) {
    let pem = include_bytes!("fixtures/rsa-test-key.pem");
    let public: Value =
        serde_json::from_str(include_str!("fixtures/rsa-test-key.jwk.json")).unwrap();
    let jwk = json!({"kty": "RSA", "n": public["n"], "e": public["e"], "kid": kid, "alg": "RS256", "use": "sig"});
    (EncodingKey::from_rsa_pem(pem).unwrap(), jwk)
}

fn idp_token(alg: Algorithm, kid: &str, key: &EncodingKey, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn claims(sub: &str, iss: &str, aud: &str) -> Value {
    json!({"sub": sub, "dev": "phone", "exp": now() + 300, "iss": iss, "aud": aud})
}

/// An identity provider's JWKS endpoint on 127.0.0.1, serving whatever
/// key set the test puts in, counting fetches.
struct Idp {
    keys: Arc<Mutex<Value>>,
    fetches: Arc<Mutex<u32>>,
    url: String,
}

async fn idp(keys: Value) -> Idp {
    let keys = Arc::new(Mutex::new(keys));
    let fetches = Arc::new(Mutex::new(0u32));
    let (served, counted) = (keys.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let (served, counted) = (served.clone(), counted.clone());
            async move {
                *counted.lock().unwrap() += 1;
                axum::Json(served.lock().unwrap().clone())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Idp { keys, fetches, url }
}

fn verifier(idp: &Idp, refresh: Duration) -> Verifier {
    Verifier::new(KeySettings {
        user_secret: Some(USER_SECRET.into()),
        service_secret: Some(SERVICE_SECRET.into()),
        jwks: Some(JwksSettings {
            url: idp.url.clone(),
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            refresh,
            min_refetch: Duration::ZERO,
        }),
    })
    .unwrap()
}

fn invalid(result: Result<Claims, AuthError>) -> String {
    match result {
        Err(AuthError::Invalid(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_service_token_is_one_only_the_service_key_signed() {
    let verifier = Verifier::new(KeySettings {
        user_secret: Some(USER_SECRET.into()),
        service_secret: Some(SERVICE_SECRET.into()),
        jwks: None,
    })
    .unwrap();
    let service = auth::mint_service(SERVICE_SECRET, "ops", now(), 60);
    assert!(verifier.verify(&service).await.unwrap().svc);
    // `svc: true` under the users' key (what anyone holding it, or a
    // leaked device token's key, could make): refused.
    // With the service key's id it is checked with the service key, which
    // did not sign it; without, with the users' key, which makes no
    // service tokens.
    let svc = Claims {
        sub: "ops".into(),
        dev: String::new(),
        exp: now() + 60,
        svc: true,
    };
    let forged = auth::mint(USER_SECRET, &svc);
    assert!(invalid(verifier.verify(&forged).await).contains("InvalidSignature"));
    let unmarked = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &svc,
        &EncodingKey::from_secret(USER_SECRET.as_bytes()),
    )
    .unwrap();
    assert!(invalid(verifier.verify(&unmarked).await).contains("service key"));
    // The service key signing a user token: refused (no kid: the users' key
    // is tried, and it did not sign it).
    let odd = auth::mint(
        SERVICE_SECRET,
        &Claims {
            sub: "alice".into(),
            dev: "d".into(),
            exp: now() + 60,
            svc: false,
        },
    );
    assert!(verifier.verify(&odd).await.is_err());
    // A gateway without a service key takes no service tokens at all.
    let users_only = Verifier::with_secret(USER_SECRET);
    assert!(invalid(users_only.verify(&service).await).contains("IM_SERVICE_SECRET"));
    // User tokens still work.
    let user = auth::mint_device(USER_SECRET, "alice", "phone", now(), 60);
    assert_eq!(verifier.verify(&user).await.unwrap().sub, "alice");
}

#[tokio::test]
async fn identity_provider_tokens_verify_against_its_jwks() {
    let (es_key, es_jwk) = es256_key("es-1");
    let (rs_key, rs_jwk) = rs256_key("rs-1");
    let idp = idp(json!({"keys": [es_jwk, rs_jwk]})).await;
    let verifier = verifier(&idp, Duration::from_secs(300));

    for (alg, kid, key) in [
        (Algorithm::ES256, "es-1", &es_key),
        (Algorithm::RS256, "rs-1", &rs_key),
    ] {
        let token = idp_token(alg, kid, key, claims("alice", ISSUER, AUDIENCE));
        let verified = verifier.verify(&token).await.unwrap();
        assert_eq!(
            (verified.sub.as_str(), verified.dev.as_str(), verified.svc),
            ("alice", "phone", false)
        );
        // Another issuer or audience: refused.
        let other_iss = idp_token(
            alg,
            kid,
            key,
            claims("alice", "https://evil.test", AUDIENCE),
        );
        assert!(
            verifier.verify(&other_iss).await.is_err(),
            "{alg:?} with another iss"
        );
        let other_aud = idp_token(alg, kid, key, claims("alice", ISSUER, "another-app"));
        assert!(
            verifier.verify(&other_aud).await.is_err(),
            "{alg:?} with another aud"
        );
        // Missing iss/aud: refused.
        let bare = idp_token(
            alg,
            kid,
            key,
            json!({"sub": "alice", "dev": "d", "exp": now() + 60}),
        );
        assert!(
            verifier.verify(&bare).await.is_err(),
            "{alg:?} without iss/aud"
        );
        // An IdP token cannot make itself a service token.
        let mut svc = claims("ops", ISSUER, AUDIENCE);
        svc["svc"] = json!(true);
        assert!(
            invalid(verifier.verify(&idp_token(alg, kid, key, svc)).await).contains("service key")
        );
    }
    // The ES key's id on an RS256 token: refused (a key is for one algorithm).
    let swapped = idp_token(
        Algorithm::RS256,
        "es-1",
        &rs_key,
        claims("alice", ISSUER, AUDIENCE),
    );
    assert!(invalid(verifier.verify(&swapped).await).contains("ES256"));
    // Algorithm confusion: an HS256 token "signed" with the RSA public key
    // as a shared secret goes to the HS256 key, which did not sign it.
    let public = include_str!("fixtures/rsa-test-key.jwk.json");
    let confused = idp_token(
        Algorithm::HS256,
        "rs-1",
        &EncodingKey::from_secret(public.as_bytes()),
        claims("alice", ISSUER, AUDIENCE),
    );
    assert!(verifier.verify(&confused).await.is_err());
    // No kid: refused with the reason.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = None;
    let nameless =
        jsonwebtoken::encode(&header, &claims("alice", ISSUER, AUDIENCE), &es_key).unwrap();
    assert!(invalid(verifier.verify(&nameless).await).contains("kid"));
    // Expired: its own code.
    let mut old = claims("alice", ISSUER, AUDIENCE);
    old["exp"] = json!(now() - 10);
    let expired = idp_token(Algorithm::ES256, "es-1", &es_key, old);
    assert_eq!(verifier.verify(&expired).await, Err(AuthError::Expired));
    assert_eq!(*idp.fetches.lock().unwrap(), 1, "keys are cached");
}

#[tokio::test]
async fn rotated_keys_are_picked_up_and_removed_ones_stop_working() {
    let (old_key, old_jwk) = es256_key("2026-11");
    let idp = idp(json!({"keys": [old_jwk]})).await;
    let verifier = verifier(&idp, Duration::from_secs(1));
    let old = idp_token(
        Algorithm::ES256,
        "2026-11",
        &old_key,
        claims("alice", ISSUER, AUDIENCE),
    );
    verifier.verify(&old).await.unwrap();

    // The provider rotates: a new key, published before it signs anything;
    // the old one is withdrawn.
    let (new_key, new_jwk) = es256_key("2026-12");
    *idp.keys.lock().unwrap() = json!({"keys": [new_jwk]});
    let new = idp_token(
        Algorithm::ES256,
        "2026-12",
        &new_key,
        claims("bob", ISSUER, AUDIENCE),
    );
    assert_eq!(
        verifier.verify(&new).await.unwrap().sub,
        "bob",
        "an unknown kid fetches the keys again"
    );
    // The old key is gone from the fetched set: refused.
    assert!(invalid(verifier.verify(&old).await).contains("unknown signing key"));

    // The provider goes down: the keys in hand keep working.
    *idp.keys.lock().unwrap() = json!({"not": "a key set"});
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(verifier.verify(&new).await.unwrap().sub, "bob");
}

/// A flood of tokens naming made-up keys costs one fetch per refetch
/// interval, not one per token: the provider is not hammered on an
/// attacker's behalf.
#[tokio::test]
async fn made_up_key_ids_cost_one_fetch_per_interval() {
    let (key, jwk) = es256_key("real");
    let idp = idp(json!({"keys": [jwk]})).await;
    let verifier = Verifier::new(KeySettings {
        user_secret: None,
        service_secret: None,
        jwks: Some(JwksSettings {
            url: idp.url.clone(),
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            refresh: Duration::from_secs(300),
            min_refetch: Duration::from_secs(60),
        }),
    })
    .unwrap();
    let real = idp_token(
        Algorithm::ES256,
        "real",
        &key,
        claims("alice", ISSUER, AUDIENCE),
    );
    verifier.verify(&real).await.unwrap();
    for n in 0..200 {
        let forged = idp_token(
            Algorithm::ES256,
            &format!("made-up-{n}"),
            &key,
            claims("alice", ISSUER, AUDIENCE),
        );
        assert!(invalid(verifier.verify(&forged).await).contains("unknown signing key"));
    }
    assert_eq!(
        *idp.fetches.lock().unwrap(),
        1,
        "made-up kids fetched the keys again"
    );
    verifier.verify(&real).await.unwrap();
}
