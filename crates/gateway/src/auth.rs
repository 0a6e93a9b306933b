//! Tokens: `sub` = user, `dev` = device, `exp`; `svc: true` marks a
//! service token.
//!
//! Three kinds of key, each for its own tokens ([`Verifier`]):
//! - user tokens signed HS256 with the gateway's secret (`IM_JWT_SECRET`);
//! - user tokens from an identity provider, RS256/ES256, verified against
//!   its JWKS (`IM_JWKS_URL`) with `iss` and `aud` checked; keys are
//!   fetched again when a token names one not seen yet (rotation) and
//!   every refresh interval (revocation);
//! - service tokens, signed HS256 with another key (`IM_SERVICE_SECRET`)
//!   and marked `kid: im-service`: a token is a service token because the
//!   service key signed it, not because it says so.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub dev: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub svc: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AuthError {
    #[error("missing token: send Authorization: Bearer <jwt> or ?token=")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "unauthenticated",
            AuthError::Expired => "token_expired",
            AuthError::Invalid(_) => "invalid_token",
        }
    }
}

/// The key id that marks a service token's key.
pub const SERVICE_KID: &str = "im-service";

pub fn mint(secret: &str, claims: &Claims) -> String {
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    if claims.svc {
        header.kid = Some(SERVICE_KID.to_string());
    }
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 encoding cannot fail")
}

/// A service token for `name`, signed with the service key.
pub fn mint_service(service_secret: &str, name: &str, now: i64, ttl_secs: i64) -> String {
    mint(
        service_secret,
        &Claims {
            sub: name.to_string(),
            dev: String::new(),
            exp: now + ttl_secs,
            svc: true,
        },
    )
}

/// A device token for `user` on `device`, valid for `ttl_secs` from `now`.
pub fn mint_device(secret: &str, user: &str, device: &str, now: i64, ttl_secs: i64) -> String {
    mint(
        secret,
        &Claims {
            sub: user.to_string(),
            dev: device.to_string(),
            exp: now + ttl_secs,
            svc: false,
        },
    )
}

/// A user token signed HS256 with `secret`. A token that claims to be a
/// service token is refused: only the service key makes one.
pub fn verify(secret: &str, token: &str) -> Result<Claims, AuthError> {
    let claims = decode(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        validation(Algorithm::HS256),
    )?;
    user_claims(claims)
}

/// A service token signed with the service key.
pub fn verify_service(service_secret: &str, token: &str) -> Result<Claims, AuthError> {
    let claims = decode(
        token,
        &DecodingKey::from_secret(service_secret.as_bytes()),
        validation(Algorithm::HS256),
    )?;
    if !claims.svc {
        return Err(AuthError::Invalid(
            "a token signed with the service key must be a service token (svc: true)".into(),
        ));
    }
    Ok(claims)
}

fn validation(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation
}

fn decode(token: &str, key: &DecodingKey, validation: Validation) -> Result<Claims, AuthError> {
    jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|error| match error.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid(error.to_string()),
        })
}

fn user_claims(claims: Claims) -> Result<Claims, AuthError> {
    if claims.svc {
        return Err(AuthError::Invalid(
            "svc is set, but the service key did not sign this token".into(),
        ));
    }
    if !im_events::ids::is_valid_id(&claims.sub) {
        return Err(AuthError::Invalid("sub is not a valid user id".into()));
    }
    Ok(claims)
}

/// What the gateway accepts tokens from.
#[derive(Debug, Clone, Default)]
pub struct KeySettings {
    /// HS256 key of user tokens.
    pub user_secret: Option<String>,
    /// HS256 key of service tokens.
    pub service_secret: Option<String>,
    /// An identity provider's keys, and what its tokens must say.
    pub jwks: Option<JwksSettings>,
}

#[derive(Debug, Clone)]
pub struct JwksSettings {
    pub url: String,
    /// `iss` every token must carry.
    pub issuer: String,
    /// `aud` every token must include.
    pub audience: String,
    /// Keys are fetched again this often (a removed key stops working).
    pub refresh: Duration,
    /// A token naming an unknown key fetches the keys again at most this
    /// often (so a flood of made-up key ids costs one fetch per interval).
    pub min_refetch: Duration,
}

/// Checks a token with the key its header names.
pub struct Verifier {
    settings: KeySettings,
    jwks: Option<Jwks>,
}

/// An identity provider's current keys.
struct Jwks {
    settings: JwksSettings,
    client: reqwest::Client,
    keys: tokio::sync::RwLock<Keys>,
    /// One fetch at a time; a burst of tokens with an unknown key fetches
    /// once.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Keys {
    by_id: HashMap<String, (DecodingKey, Algorithm)>,
    fetched: Option<Instant>,
}

/// The default of [`JwksSettings::min_refetch`].
pub const MIN_REFETCH: Duration = Duration::from_secs(10);
/// Algorithms an identity provider's tokens may use.
const ASYMMETRIC: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
];

impl Verifier {
    pub fn new(settings: KeySettings) -> im_runtime::Result<Self> {
        im_runtime::ensure_config!(
            settings.user_secret.is_some() || settings.jwks.is_some(),
            "no key for user tokens: give IM_JWT_SECRET or IM_JWKS_URL"
        );
        let jwks = match &settings.jwks {
            Some(jwks) => Some(Jwks {
                settings: jwks.clone(),
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .map_err(|error| im_runtime::config_error!("JWKS client: {error}"))?,
                keys: Default::default(),
                fetching: Default::default(),
            }),
            None => None,
        };
        Ok(Verifier { settings, jwks })
    }

    /// Only an HS256 secret, for tests and single-machine setups.
    pub fn with_secret(secret: &str) -> Self {
        Self::new(KeySettings {
            user_secret: Some(secret.to_string()),
            service_secret: None,
            jwks: None,
        })
        .expect("a secret is a key")
    }

    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| AuthError::Invalid(error.to_string()))?;
        match header.alg {
            Algorithm::HS256 if header.kid.as_deref() == Some(SERVICE_KID) => {
                match &self.settings.service_secret {
                    Some(secret) => verify_service(secret, token),
                    None => Err(AuthError::Invalid(
                        "this gateway takes no service tokens (IM_SERVICE_SECRET is not set)"
                            .into(),
                    )),
                }
            }
            Algorithm::HS256 => match &self.settings.user_secret {
                Some(secret) => verify(secret, token),
                None => Err(AuthError::Invalid(
                    "HS256 user tokens are not accepted here; use the identity provider's".into(),
                )),
            },
            alg if ASYMMETRIC.contains(&alg) => {
                let Some(jwks) = &self.jwks else {
                    return Err(AuthError::Invalid(format!(
                        "{alg:?} tokens need IM_JWKS_URL, which is not set"
                    )));
                };
                let kid = header
                    .kid
                    .ok_or_else(|| AuthError::Invalid("the token names no key (kid)".into()))?;
                let (key, key_alg) = jwks.key(&kid).await?;
                if key_alg != alg {
                    return Err(AuthError::Invalid(format!(
                        "key {kid:?} is for {key_alg:?}, the token says {alg:?}"
                    )));
                }
                let mut validation = validation(alg);
                validation.set_issuer(&[jwks.settings.issuer.as_str()]);
                validation.set_audience(&[jwks.settings.audience.as_str()]);
                validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
                user_claims(decode(token, &key, validation)?)
            }
            alg => Err(AuthError::Invalid(format!(
                "algorithm {alg:?} is not accepted"
            ))),
        }
    }
}

impl Jwks {
    async fn key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), AuthError> {
        let stale = |keys: &Keys| {
            keys.fetched
                .is_none_or(|at| at.elapsed() >= self.settings.refresh)
        };
        {
            let keys = self.keys.read().await;
            if !stale(&keys) {
                if let Some(found) = keys.by_id.get(kid) {
                    return Ok(found.clone());
                }
            }
        }
        let _one = self.fetching.lock().await;
        {
            let keys = self.keys.read().await;
            let recent = keys
                .fetched
                .is_some_and(|at| at.elapsed() < self.settings.min_refetch);
            match keys.by_id.get(kid) {
                Some(found) if !stale(&keys) => return Ok(found.clone()),
                None if recent => {
                    return Err(AuthError::Invalid(format!("unknown signing key {kid:?}")))
                }
                _ => {}
            }
        }
        match self.fetch().await {
            Ok(fresh) => {
                let mut keys = self.keys.write().await;
                keys.by_id = fresh;
                keys.fetched = Some(Instant::now());
            }
            Err(error) => {
                // Keep what we had: an identity provider that is down for a
                // moment does not log everyone out; try again soon.
                tracing::warn!(%error, url = %self.settings.url, "fetching the JWKS failed");
                let mut keys = self.keys.write().await;
                if keys.fetched.is_none() {
                    return Err(AuthError::Invalid(format!(
                        "the identity provider's keys are unavailable: {error}"
                    )));
                }
                keys.fetched = Instant::now().checked_sub(
                    self.settings
                        .refresh
                        .saturating_sub(self.settings.min_refetch),
                );
            }
        }
        self.keys
            .read()
            .await
            .by_id
            .get(kid)
            .cloned()
            .ok_or_else(|| AuthError::Invalid(format!("unknown signing key {kid:?}")))
    }

    async fn fetch(&self) -> im_runtime::Result<HashMap<String, (DecodingKey, Algorithm)>> {
        let set: jsonwebtoken::jwk::JwkSet = self
            .client
            .get(&self.settings.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| {
                im_runtime::Error::Remote(format!("JWKS {}: {error}", self.settings.url))
            })?
            .json()
            .await
            .map_err(|error| {
                im_runtime::Error::Remote(format!(
                    "JWKS {} is not a key set: {error}",
                    self.settings.url
                ))
            })?;
        Ok(parse_jwks(&set))
    }
}

/// The usable keys of a key set: those with a `kid`, for signing, of an
/// accepted algorithm (given, or implied by the key type).
fn parse_jwks(set: &jsonwebtoken::jwk::JwkSet) -> HashMap<String, (DecodingKey, Algorithm)> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, PublicKeyUse};
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
                return None;
            }
            let alg = match jwk.common.key_algorithm {
                // KeyAlgorithm and Algorithm name the signing ones alike.
                Some(alg) => format!("{alg:?}").parse::<Algorithm>().ok()?,
                None => match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                        Algorithm::ES256
                    }
                    AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P384 => {
                        Algorithm::ES384
                    }
                    _ => return None,
                },
            };
            if !ASYMMETRIC.contains(&alg) {
                return None;
            }
            Some((kid, (DecodingKey::from_jwk(jwk).ok()?, alg)))
        })
        .collect()
}

/// The token from `Authorization: Bearer …` or a `token` query parameter.
pub fn token_from(authorization: Option<&str>, query: Option<&str>) -> Option<String> {
    if let Some(value) = authorization {
        if let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        {
            return Some(token.trim().to_string());
        }
    }
    // Percent-decoded, as any URL's query is (a client may encode the
    // token's dots).
    serde_urlencoded::from_str::<Vec<(String, String)>>(query?)
        .ok()?
        .into_iter()
        .find_map(|(name, value)| (name == "token").then_some(value))
}

#[cfg(test)]
mod tests;
