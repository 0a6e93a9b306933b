//! Local HTTP servers standing in for the push providers: APNs (HTTP/2 only),
//! FCM (OAuth2 token endpoint and HTTP v1 send), Huawei Push Kit (token and
//! send), Xiaomi Push, and a webhook receiver. Each checks every request as
//! the real service would (path, headers, auth token, payload) and records a
//! violation for anything wrong; answers can be scripted per device token.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};

pub const APNS_KEY_ID: &str = "KEY1234567";
pub const APNS_TEAM_ID: &str = "TEAM123456";
pub const APNS_TOPIC: &str = "com.example.im";
pub const FCM_PROJECT: &str = "im-test-project";
pub const FCM_EMAIL: &str = "pusher@im-test-project.iam.gserviceaccount.com";
pub const FCM_ACCESS_TOKEN: &str = "fcm-access-token-1";
pub const HMS_APP_ID: &str = "10086";
pub const HMS_SECRET: &str = "hms-client-secret";
pub const HMS_ACCESS_TOKEN: &str = "hms-access-token-1";
pub const XIAOMI_SECRET: &str = "xiaomi-app-secret";
pub const XIAOMI_PACKAGE: &str = "com.example.im";
pub const WEBHOOK_SECRET: &str = "webhook-hmac-secret";

const FCM_PUBLIC_KEY: &str = include_str!("fixtures/fcm-test-key.pub.pem");
const FCM_PRIVATE_KEY: &str = include_str!("fixtures/fcm-test-key.pem");

/// One notification a stand-in accepted or refused.
#[derive(Debug, Clone)]
pub struct Seen {
    pub provider: &'static str,
    pub token: String,
    pub notification_id: String,
    pub title: String,
    pub body: String,
    pub badge: u64,
    pub count: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The status the stand-in answered with.
    pub status: u16,
    pub at: Instant,
}

/// A scripted answer: status, headers, body.
pub type Answer = (u16, Vec<(String, String)>, String);

#[derive(Default)]
struct Inner {
    seen: Vec<Seen>,
    violations: Vec<String>,
    /// Per device token: answers to give, in order, before the default.
    script: HashMap<String, VecDeque<Answer>>,
    /// Per device token: the answer once the script is used up.
    always: HashMap<String, Answer>,
    token_requests: HashMap<&'static str, usize>,
}

pub struct StandIns {
    inner: Arc<Mutex<Inner>>,
    apns_public: Vec<u8>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl StandIns {
    /// Start the servers on a free loopback port; write the key files the
    /// offline function reads into a temp dir.
    pub async fn start() -> Arc<StandIns> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        use ring::signature::KeyPair as _;
        let apns_public = pair.public_key().as_ref().to_vec();
        let dir = tempfile::Builder::new()
            .prefix("im-standins-")
            .tempdir()
            .unwrap();
        std::fs::write(
            dir.path().join("apns.p8"),
            pem("PRIVATE KEY", pkcs8.as_ref()),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let account = json!({
            "type": "service_account", "project_id": FCM_PROJECT, "private_key_id": "fcm-key-1",
            "private_key": FCM_PRIVATE_KEY, "client_email": FCM_EMAIL,
            "token_uri": format!("http://127.0.0.1:{port}/fcm/token"),
        });
        std::fs::write(dir.path().join("fcm.json"), account.to_string()).unwrap();
        let standins = Arc::new(StandIns {
            inner: Arc::default(),
            apns_public,
            port,
            dir,
        });
        let app = Router::new().fallback(handle).with_state(standins.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        standins
    }

    /// Environment that points every provider of the offline function here.
    pub fn env(&self) -> Vec<(String, String)> {
        let base = format!("http://127.0.0.1:{}", self.port);
        let dir = self.dir.path();
        [
            ("IM_APNS_URL", base.clone()),
            (
                "IM_APNS_KEY_FILE",
                dir.join("apns.p8").display().to_string(),
            ),
            ("IM_APNS_KEY_ID", APNS_KEY_ID.into()),
            ("IM_APNS_TEAM_ID", APNS_TEAM_ID.into()),
            ("IM_APNS_TOPIC", APNS_TOPIC.into()),
            ("IM_FCM_URL", format!("{base}/fcm")),
            (
                "IM_FCM_CREDENTIALS",
                dir.join("fcm.json").display().to_string(),
            ),
            ("IM_HMS_URL", format!("{base}/hms")),
            ("IM_HMS_TOKEN_URL", format!("{base}/hms/token")),
            ("IM_HMS_APP_ID", HMS_APP_ID.into()),
            ("IM_HMS_CLIENT_SECRET", HMS_SECRET.into()),
            ("IM_XIAOMI_URL", format!("{base}/mi")),
            ("IM_XIAOMI_APP_SECRET", XIAOMI_SECRET.into()),
            ("IM_XIAOMI_PACKAGE", XIAOMI_PACKAGE.into()),
            ("IM_WEBHOOK_URL", format!("{base}/hook")),
            ("IM_WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Answer `token`'s next requests with these, then with the default.
    pub fn script(&self, token: &str, answers: Vec<Answer>) {
        self.lock().script.insert(token.to_string(), answers.into());
    }

    /// Answer every request for `token` with this (after any script).
    pub fn always(&self, token: &str, answer: Answer) {
        self.lock().always.insert(token.to_string(), answer);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    pub fn seen_for(&self, token: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.token == token)
            .collect()
    }

    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    pub fn token_requests(&self, provider: &str) -> usize {
        self.lock()
            .token_requests
            .get(provider)
            .copied()
            .unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn violation(&self, text: String) {
        eprintln!("stand-in violation: {text}");
        self.lock().violations.push(text);
    }

    fn answer_for(&self, token: &str, default: Answer) -> Answer {
        let mut inner = self.lock();
        if let Some(next) = inner.script.get_mut(token).and_then(VecDeque::pop_front) {
            return next;
        }
        inner.always.get(token).cloned().unwrap_or(default)
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(64)
        .map(|chunk| std::str::from_utf8(chunk).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn respond((status, headers, body): Answer) -> Response {
    let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
    for (name, value) in headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    response
}

fn ok(body: Value) -> Answer {
    (
        200,
        vec![("content-type".into(), "application/json".into())],
        body.to_string(),
    )
}

fn form(body: &[u8]) -> HashMap<String, String> {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

/// Everything a notification says, as the stand-in read it.
struct Parsed {
    token: String,
    id: String,
    title: String,
    body: String,
    badge: u64,
    data: Value,
}

async fn handle(State(standins): State<Arc<StandIns>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    if parts.method != Method::POST {
        standins.violation(format!("{} {path}: providers take POST", parts.method));
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let headers = &parts.headers;
    let checked = match path.as_str() {
        "/fcm/token" => return fcm_token(&standins, &body),
        "/hms/token" => return hms_token(&standins, &body),
        p if p.starts_with("/3/device/") => {
            ("apns", apns(&standins, parts.version, headers, p, &body))
        }
        p if p.starts_with("/fcm/") => ("fcm", fcm(headers, p, &body)),
        p if p.starts_with("/hms/") => ("hms", hms(headers, p, &body)),
        "/mi/v3/message/regid" => ("xiaomi", xiaomi(headers, &body)),
        "/hook" => ("webhook", webhook(headers, &body)),
        _ => {
            standins.violation(format!("POST {path}: no such endpoint"));
            return StatusCode::NOT_FOUND.into_response();
        }
    };
    let (provider, parsed) = checked;
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(problem) => {
            standins.violation(format!("{provider} {path}: {problem}"));
            return (StatusCode::BAD_REQUEST, problem).into_response();
        }
    };
    let default = match provider {
        "apns" => (
            200,
            vec![("apns-id".into(), parsed.id.clone())],
            String::new(),
        ),
        "fcm" => ok(json!({"name": format!("projects/{FCM_PROJECT}/messages/{}", parsed.id)})),
        "hms" => ok(json!({"code": "80000000", "msg": "Success", "requestId": parsed.id})),
        "xiaomi" => {
            ok(json!({"result": "ok", "code": 0, "data": {"id": parsed.id}, "description": "成功"}))
        }
        _ => (200, vec![], "{}".into()),
    };
    let answer = standins.answer_for(&parsed.token, default);
    let number = |key: &str| {
        let value = &parsed.data[key];
        value
            .as_u64()
            .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(0)
    };
    let seen = Seen {
        provider,
        token: parsed.token.clone(),
        notification_id: parsed.id.clone(),
        title: parsed.title.clone(),
        body: parsed.body.clone(),
        badge: parsed.badge,
        count: number("count"),
        first_seq: number("first_seq"),
        last_seq: number("last_seq"),
        status: answer.0,
        at: Instant::now(),
    };
    standins.lock().seen.push(seen);
    respond(answer)
}

fn check(condition: bool, problem: impl Into<String>) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(problem.into())
    }
}

fn json_body(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))
}

fn bearer(headers: &HeaderMap) -> String {
    let value = header(headers, "authorization");
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .unwrap_or_default()
        .to_string()
}

fn apns(
    standins: &StandIns,
    version: Version,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
) -> Result<Parsed, String> {
    check(
        version == Version::HTTP_2,
        format!("APNs speaks HTTP/2 only, got {version:?}"),
    )?;
    let token = path.trim_start_matches("/3/device/").to_string();
    check(
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "device token is not hex",
    )?;
    let jwt = bearer(headers);
    let jwt_header = jsonwebtoken::decode_header(&jwt)
        .map_err(|e| format!("authorization is not a JWT: {e}"))?;
    check(
        jwt_header.alg == jsonwebtoken::Algorithm::ES256,
        "provider token must be ES256",
    )?;
    check(
        jwt_header.kid.as_deref() == Some(APNS_KEY_ID),
        "kid must be the key id",
    )?;
    let key = jsonwebtoken::DecodingKey::from_ec_der(&standins.apns_public);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.required_spec_claims = ["iss".to_string()].into_iter().collect();
    validation.validate_exp = false;
    validation.set_issuer(&[APNS_TEAM_ID]);
    let claims = jsonwebtoken::decode::<Value>(&jwt, &key, &validation)
        .map_err(|e| format!("provider token does not verify: {e}"))?;
    let iat = claims.claims["iat"].as_i64().unwrap_or(0);
    check(
        (chrono::Utc::now().timestamp() - iat).abs() < 3600,
        "iat must be within the hour",
    )?;
    check(
        header(headers, "apns-topic") == APNS_TOPIC,
        "apns-topic must be the bundle id",
    )?;
    check(
        header(headers, "apns-push-type") == "alert",
        "apns-push-type must be alert",
    )?;
    let id = header(headers, "apns-id");
    check(uuid::Uuid::parse_str(&id).is_ok(), "apns-id must be a UUID")?;
    check(
        header(headers, "apns-collapse-id").len() <= 64,
        "apns-collapse-id over 64 bytes",
    )?;
    let payload = json_body(body)?;
    let alert = &payload["aps"]["alert"];
    check(
        alert["title"].is_string() && alert["body"].is_string(),
        "aps.alert needs title and body",
    )?;
    check(
        payload["aps"]["badge"].is_u64(),
        "aps.badge must be a number",
    )?;
    check(
        payload["im"]["notification_id"] == json!(id),
        "apns-id and payload disagree",
    )?;
    Ok(Parsed {
        token,
        id,
        title: alert["title"].as_str().unwrap_or_default().into(),
        body: alert["body"].as_str().unwrap_or_default().into(),
        badge: payload["aps"]["badge"].as_u64().unwrap_or(0),
        data: payload["im"].clone(),
    })
}

fn fcm_token(standins: &StandIns, body: &[u8]) -> Response {
    standins
        .lock()
        .token_requests
        .entry("fcm")
        .and_modify(|n| *n += 1)
        .or_insert(1);
    let form = form(body);
    let problem = (|| {
        check(
            form.get("grant_type").map(String::as_str)
                == Some("urn:ietf:params:oauth:grant-type:jwt-bearer"),
            "grant_type must be jwt-bearer",
        )?;
        let assertion = form.get("assertion").cloned().unwrap_or_default();
        let header = jsonwebtoken::decode_header(&assertion)
            .map_err(|e| format!("assertion is not a JWT: {e}"))?;
        check(
            header.alg == jsonwebtoken::Algorithm::RS256,
            "assertion must be RS256",
        )?;
        check(
            header.kid.as_deref() == Some("fcm-key-1"),
            "kid must be the private_key_id",
        )?;
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(FCM_PUBLIC_KEY.as_bytes()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_issuer(&[FCM_EMAIL]);
        validation.set_audience(&[format!("http://127.0.0.1:{}/fcm/token", standins.port)]);
        let claims = jsonwebtoken::decode::<Value>(&assertion, &key, &validation)
            .map_err(|e| format!("assertion does not verify: {e}"))?;
        check(
            claims.claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging",
            "scope must be firebase.messaging",
        )
    })();
    match problem {
        Ok(()) => respond(ok(
            json!({"access_token": FCM_ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"}),
        )),
        Err(problem) => {
            standins.violation(format!("fcm token: {problem}"));
            respond((
                400,
                vec![],
                json!({"error": "invalid_grant", "error_description": problem}).to_string(),
            ))
        }
    }
}

fn fcm(headers: &HeaderMap, path: &str, body: &[u8]) -> Result<Parsed, String> {
    check(
        path == format!("/fcm/v1/projects/{FCM_PROJECT}/messages:send"),
        "path must be /v1/projects/<project>/messages:send",
    )?;
    check(
        bearer(headers) == FCM_ACCESS_TOKEN,
        "authorization must carry the OAuth2 access token",
    )?;
    let payload = json_body(body)?;
    let message = &payload["message"];
    let token = message["token"]
        .as_str()
        .ok_or("message.token missing")?
        .to_string();
    check(
        message["notification"]["title"].is_string() && message["notification"]["body"].is_string(),
        "notification needs title and body",
    )?;
    check(
        message["data"]
            .as_object()
            .is_some_and(|d| d.values().all(Value::is_string)),
        "data values must be strings",
    )?;
    Ok(Parsed {
        token,
        id: message["data"]["notification_id"]
            .as_str()
            .unwrap_or_default()
            .into(),
        title: message["notification"]["title"]
            .as_str()
            .unwrap_or_default()
            .into(),
        body: message["notification"]["body"]
            .as_str()
            .unwrap_or_default()
            .into(),
        badge: message["android"]["notification"]["notification_count"]
            .as_u64()
            .unwrap_or(0),
        data: message["data"].clone(),
    })
}

fn hms_token(standins: &StandIns, body: &[u8]) -> Response {
    standins
        .lock()
        .token_requests
        .entry("hms")
        .and_modify(|n| *n += 1)
        .or_insert(1);
    let form = form(body);
    let valid = form.get("grant_type").map(String::as_str) == Some("client_credentials")
        && form.get("client_id").map(String::as_str) == Some(HMS_APP_ID)
        && form.get("client_secret").map(String::as_str) == Some(HMS_SECRET);
    if valid {
        respond(ok(
            json!({"access_token": HMS_ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"}),
        ))
    } else {
        standins.violation(format!("hms token: bad client credentials {form:?}"));
        respond((
            400,
            vec![],
            json!({"error": 1101, "error_description": "invalid client"}).to_string(),
        ))
    }
}

fn hms(headers: &HeaderMap, path: &str, body: &[u8]) -> Result<Parsed, String> {
    check(
        path == format!("/hms/v1/{HMS_APP_ID}/messages:send"),
        "path must be /v1/<app id>/messages:send",
    )?;
    check(
        bearer(headers) == HMS_ACCESS_TOKEN,
        "authorization must carry the access token",
    )?;
    let payload = json_body(body)?;
    check(
        payload["validate_only"] == json!(false),
        "validate_only must be false",
    )?;
    let message = &payload["message"];
    let tokens = message["token"]
        .as_array()
        .ok_or("message.token must be an array")?;
    check(tokens.len() == 1, "one token per request")?;
    let notification = &message["android"]["notification"];
    check(
        notification["title"].is_string() && notification["body"].is_string(),
        "android.notification needs title and body",
    )?;
    check(
        notification["click_action"]["type"] == json!(3),
        "click_action.type 3 opens the app",
    )?;
    let data: Value = serde_json::from_str(
        message["data"]
            .as_str()
            .ok_or("data must be a JSON string")?,
    )
    .map_err(|e| format!("data is not JSON: {e}"))?;
    Ok(Parsed {
        token: tokens[0].as_str().unwrap_or_default().into(),
        id: data["notification_id"].as_str().unwrap_or_default().into(),
        title: notification["title"].as_str().unwrap_or_default().into(),
        body: notification["body"].as_str().unwrap_or_default().into(),
        badge: 0,
        data,
    })
}

fn xiaomi(headers: &HeaderMap, body: &[u8]) -> Result<Parsed, String> {
    check(
        header(headers, "authorization") == format!("key={XIAOMI_SECRET}"),
        "authorization must be key=<AppSecret>",
    )?;
    check(
        header(headers, "content-type").starts_with("application/x-www-form-urlencoded"),
        "body must be a form",
    )?;
    let form = form(body);
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    check(
        field("restricted_package_name") == XIAOMI_PACKAGE,
        "restricted_package_name must be the package",
    )?;
    check(
        !field("registration_id").is_empty(),
        "registration_id missing",
    )?;
    check(
        !field("title").is_empty() && !field("description").is_empty(),
        "title and description required",
    )?;
    check(
        field("pass_through") == "0",
        "a notification is not pass-through",
    )?;
    check(
        field("notify_id").parse::<u32>().is_ok(),
        "notify_id must be a number",
    )?;
    let data: Value =
        serde_json::from_str(&field("payload")).map_err(|e| format!("payload is not JSON: {e}"))?;
    Ok(Parsed {
        token: field("registration_id"),
        id: data["notification_id"].as_str().unwrap_or_default().into(),
        title: field("title"),
        body: field("description"),
        badge: data["badge"].as_u64().unwrap_or(0),
        data,
    })
}

fn webhook(headers: &HeaderMap, body: &[u8]) -> Result<Parsed, String> {
    let timestamp = header(headers, "webhook-timestamp");
    let signature = header(headers, "webhook-signature");
    let id = header(headers, "webhook-id");
    check(
        im_offline::providers::webhook::verify(WEBHOOK_SECRET, &id, &timestamp, body, &signature),
        "Standard Webhooks signature does not verify",
    )?;
    let age = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap_or(0);
    check(age.abs() < 300, "timestamp is not current")?;
    let payload = json_body(body)?;
    check(
        payload["notification_id"] == json!(id),
        "webhook-id and body disagree",
    )?;
    Ok(Parsed {
        token: payload["token"].as_str().unwrap_or_default().into(),
        id,
        title: payload["title"].as_str().unwrap_or_default().into(),
        body: payload["body"].as_str().unwrap_or_default().into(),
        badge: payload["badge"].as_u64().unwrap_or(0),
        data: payload,
    })
}

/// Wait until `check` holds for the stand-ins, or fail with what was seen.
pub async fn wait_for(
    standins: &StandIns,
    timeout: Duration,
    what: &str,
    check: impl Fn(&[Seen]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = standins.seen();
        if check(&seen) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; seen: {seen:#?}\nviolations: {:#?}",
                standins.violations()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
