//! The HTTP API matches its document: schemathesis (PyPI; infra/test.sh
//! installs it in .tools/schemathesis) generates requests from
//! schemas/openapi.json and runs every check against a live gateway with a
//! user token: no 5xx, no undocumented status, nothing the document forbids
//! accepted, nothing it allows refused. Bounded in cases (40 per
//! operation, about 1,900 requests).
//!
//! `/v1/ws` is left out: its one valid request is a WebSocket handshake,
//! which an HTTP fuzzer cannot complete; the gateway tests cover it.

use std::process::Command;

use im_pipeline_tests::{token, Pipeline};

fn schemathesis() -> std::path::PathBuf {
    match std::env::var_os("IM_SCHEMATHESIS") {
        Some(path) => path.into(),
        None => {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/schemathesis/bin/st")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_api_as_documented() {
    let st = schemathesis();
    assert!(
        st.exists(),
        "{} is missing: install schemathesis (python3 -m venv .tools/schemathesis && .tools/schemathesis/bin/pip install schemathesis; infra/test.sh does) or set IM_SCHEMATHESIS",
        st.display()
    );
    let mut pipeline = Pipeline::start().await;
    let port = pipeline.start_gateway("gateway", &[]).await;
    let document = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/openapi.json");
    let user = token("alice", "web", 600);
    // One seed, so a failure is the same failure when run again; set
    // IM_SCHEMATHESIS_SEED to explore further.
    let seed = std::env::var("IM_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261201".into());
    // Its cache of earlier failures stays out of the checkout.
    let scratch = tempfile::tempdir().unwrap();
    let cwd = scratch.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .current_dir(cwd)
            .args(["run", &document.display().to_string()])
            .args(["--url", &format!("http://127.0.0.1:{port}")])
            .args(["-H", &format!("Authorization: Bearer {user}")])
            .args([
                "--checks",
                "all",
                "--max-examples",
                "40",
                "--exclude-path",
                "/v1/ws",
            ])
            .args(["--no-color", "--request-timeout", "10", "--seed", &seed])
            .output()
            .expect("schemathesis runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "schemathesis found the API and its document apart:\n{stdout}"
    );
    assert!(stdout.contains(" passed"), "{stdout}");
}
