//! The browser chat at `/app/` in headless Chromium against the real
//! system (the script is clients/js/integration/browser.ts), and what the
//! gateway must refuse around it: development tokens when they are off,
//! files outside the app.

use std::time::Duration;

use im_pipeline_tests::{http, run_node_script, Pipeline};

fn sdk_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../clients/js")
        .canonicalize()
        .expect("clients/js")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_chat_and_the_badge_follows_what_bob_read() {
    let dist = sdk_dir().join("dist");
    assert!(
        dist.join("app/index.html").exists(),
        "{} is missing: build the SDK and app first (cd clients/js && npm ci && npm run build; infra/test.sh does)",
        dist.join("app/index.html").display()
    );
    let chromium = std::env::var("IM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (apt-get install chromium; infra/test.sh does as root) or set IM_CHROMIUM"
    );
    let mut pipeline = Pipeline::start().await;
    let app_dir = dist.display().to_string();
    let port = pipeline
        .start_gateway(
            "gateway",
            &[("IM_APP_DIR", app_dir.as_str()), ("IM_DEV_TOKENS", "true")],
        )
        .await;
    let plain = pipeline.start_gateway("gateway-plain", &[]).await;
    // Off by default: no development tokens, no app.
    let (status, body) = http(
        plain,
        "POST",
        "/v1/dev/token",
        None,
        &[],
        r#"{"user":"mallory"}"#,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = http(plain, "GET", "/app/", None, &[], "").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("npm run build"), "{body}");
    // On: a name gets a token; nothing outside the app is served.
    let (status, body) = http(
        port,
        "POST",
        "/v1/dev/token",
        None,
        &[],
        r#"{"user":"has space"}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(port, "GET", "/app/", None, &[], "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<title>IM chat</title>"), "{body}");
    for hostile in [
        "/app/../Cargo.toml",
        "/app/%2e%2e/package.json",
        "/app/src/../../package.json",
    ] {
        let (status, body) = http(port, "GET", hostile, None, &[], "").await;
        assert_ne!(status, 200, "{hostile}: {body}");
    }
    // The browsers: alice's gateway is SIGKILLed midway (the page
    // reconnects to the other one, every message still drawn once).
    let second = pipeline.start_gateway("gateway-2", &[]).await;
    let env = [
        ("IM_APP_URL", format!("http://127.0.0.1:{port}/app/")),
        ("IM_CHROMIUM", chromium),
        (
            "IM_SCREENSHOT",
            std::env::var("IM_SCREENSHOT").unwrap_or_default(),
        ),
    ];
    let mut killed = None;
    let done = tokio::task::block_in_place(|| {
        run_node_script(
            "integration/browser.js",
            &env,
            Duration::from_secs(180),
            |event| {
                let gateway = event["gateway"].as_str()?;
                (event["event"] == "kill").then(|| {
                    pipeline.process(gateway).kill9();
                    killed = Some(gateway.to_string());
                    "killed".to_string()
                })
            },
        )
    });
    assert_eq!(done["ok"], true, "{done}");
    let killed = killed.expect("alice's gateway was killed");
    assert!(!pipeline.process(&killed).running(), "{killed}");
    let _ = second;
}
