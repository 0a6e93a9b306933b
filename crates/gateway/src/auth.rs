//! JWT (HS256) for devices and services: `sub` = user, `dev` = device,
//! `exp`; `svc: true` marks a service token.

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

pub fn mint(secret: &str, claims: &Claims) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 encoding cannot fail")
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

pub fn verify(secret: &str, token: &str) -> Result<Claims, AuthError> {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Claims>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map(|data| data.claims)
    .map_err(|error| match error.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
        _ => AuthError::Invalid(error.to_string()),
    })
    .and_then(|claims| {
        if claims.svc || im_events::ids::is_valid_id(&claims.sub) {
            Ok(claims)
        } else {
            Err(AuthError::Invalid("sub is not a valid user id".into()))
        }
    })
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
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token=").map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_900_000_000;

    #[test]
    fn minted_tokens_verify() {
        let token = mint_device(
            "s3cret",
            "alice",
            "phone",
            chrono::Utc::now().timestamp(),
            60,
        );
        let claims = verify("s3cret", &token).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.dev.as_str(), claims.svc),
            ("alice", "phone", false)
        );
    }

    #[test]
    fn bad_tokens_are_refused_with_their_reason() {
        let expired = mint_device("s3cret", "alice", "phone", 1_000, 60);
        assert_eq!(verify("s3cret", &expired), Err(AuthError::Expired));
        let token = mint_device("s3cret", "alice", "phone", NOW, 60);
        assert!(matches!(
            verify("other", &token),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            verify("s3cret", "not.a.jwt"),
            Err(AuthError::Invalid(_))
        ));
        let bad_user = mint_device("s3cret", "has space", "phone", NOW, 60);
        assert!(matches!(
            verify("s3cret", &bad_user),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn tokens_come_from_header_or_query() {
        assert_eq!(token_from(Some("Bearer abc"), None).as_deref(), Some("abc"));
        assert_eq!(
            token_from(None, Some("x=1&token=xyz")).as_deref(),
            Some("xyz")
        );
        assert_eq!(token_from(Some("Basic abc"), None), None);
        assert_eq!(token_from(None, None), None);
    }
}
