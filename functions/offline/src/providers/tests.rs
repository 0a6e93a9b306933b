use super::*;
use reqwest::header::HeaderValue;

#[test]
fn statuses_are_classified() {
    let mut headers = HeaderMap::new();
    assert!(matches!(
        classify(StatusCode::OK, &headers, ""),
        SendOutcome::Delivered(_)
    ));
    assert!(matches!(
        classify(StatusCode::BAD_REQUEST, &headers, "bad"),
        SendOutcome::Failed(text) if text == "400 Bad Request bad"
    ));
    headers.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("7"));
    assert_eq!(
        classify(StatusCode::TOO_MANY_REQUESTS, &headers, ""),
        SendOutcome::Retry {
            after: Some(Duration::from_secs(7)),
            answer: "429 Too Many Requests".into()
        }
    );
    assert!(matches!(
        classify(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), ""),
        SendOutcome::Retry { after: None, .. }
    ));
}

#[test]
fn retry_after_reads_seconds_and_dates() {
    let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let mut headers = HeaderMap::new();
    assert_eq!(retry_after(&headers, now), None);
    headers.insert(
        reqwest::header::RETRY_AFTER,
        HeaderValue::from_static("Thu, 01 Jan 2026 00:00:30 GMT"),
    );
    assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(30)));
    headers.insert(
        reqwest::header::RETRY_AFTER,
        HeaderValue::from_static("soon"),
    );
    assert_eq!(retry_after(&headers, now), None);
}

#[tokio::test]
async fn cached_tokens_are_reused_until_invalidated() {
    let cache = CachedToken::default();
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let refresh = || async {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok((format!("t{n}"), Duration::from_secs(3600)))
    };
    assert_eq!(cache.get(refresh).await.unwrap(), "t0");
    assert_eq!(cache.get(refresh).await.unwrap(), "t0");
    cache.invalidate().await;
    assert_eq!(cache.get(refresh).await.unwrap(), "t1");
    let short = CachedToken::default();
    short
        .get(|| async { Ok(("s".to_string(), Duration::from_secs(30))) })
        .await
        .unwrap();
    assert_eq!(
        short
            .get(|| async { Ok(("fresh".to_string(), Duration::from_secs(30))) })
            .await
            .unwrap(),
        "fresh",
        "a token about to expire is refreshed"
    );
}

#[tokio::test]
async fn an_unconfigured_provider_fails_with_what_to_do() {
    let providers = Providers::builder(4).build();
    let outcome = providers.send("apns", &sample_notice()).await;
    assert!(matches!(outcome, SendOutcome::Failed(text) if text.contains("not configured")));
}
