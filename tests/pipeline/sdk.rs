//! The TypeScript SDK (clients/js) against the real system: two gateways
//! behind `/v1/connect`; the SDK's own integration script chats as alice
//! and bob, and when it asks, the gateway alice is connected to is
//! SIGKILLed while she keeps sending. The script checks every message acked
//! once, shown to bob once and in order, and bob's unread (10, then 0).

use std::time::Duration;

use im_pipeline_tests::{run_node_script, token, Pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_survives_a_killed_gateway() {
    let mut pipeline = Pipeline::start().await;
    let first = pipeline.start_gateway("gateway-1", &[]).await;
    let second = pipeline.start_gateway("gateway-2", &[]).await;
    let env = [
        (
            "IM_GATEWAYS",
            format!("http://127.0.0.1:{first},http://127.0.0.1:{second}"),
        ),
        ("IM_TOKEN_ALICE", token("alice", "web", 600)),
        ("IM_TOKEN_BOB", token("bob", "web", 600)),
    ];
    let (done, killed) = tokio::task::block_in_place(|| {
        run_node_script(
            "integration/run.js",
            &env,
            Duration::from_secs(180),
            |gateway| pipeline.process(gateway).kill9(),
        )
    });
    let killed = killed.expect("a gateway was killed midway");
    assert_eq!(done["ok"], true, "{done}");
    assert_ne!(
        done["alice_gateway"].as_str(),
        Some(killed.as_str()),
        "alice ended on the surviving gateway: {done}"
    );
}
