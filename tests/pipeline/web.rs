//! The browser chat at `/app/` in headless Chromium against the real
//! system (the script is clients/js/integration/browser.ts), and what the
//! gateway must refuse around it: development tokens when they are off,
//! files outside the app.

use std::process::Command;
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
    let chromium = im_pipeline_tests::chromium();
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
    let (done, killed) = tokio::task::block_in_place(|| {
        run_node_script(
            "integration/browser.js",
            &env,
            Duration::from_secs(180),
            |gateway| pipeline.process(gateway).kill9(),
        )
    });
    assert_eq!(done["ok"], true, "{done}");
    let killed = killed.expect("alice's gateway was killed");
    assert!(!pipeline.process(&killed).running(), "{killed}");
    let _ = second;
}

/// The processes below `root` (its children, theirs, …), from /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": comm may hold spaces, so read after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// The pid of the process `imctl up` started as `instance`.
fn instance_pid(up: u32, instance: &str) -> Option<u32> {
    let wanted = format!("IM_INSTANCE={instance}");
    descendants(up).into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .map(|env| env.split(|b| *b == 0).any(|var| var == wanted.as_bytes()))
            .unwrap_or(false)
    })
}

/// Under `imctl up --cluster` (3 NATS nodes, two replicas of every
/// function, two gateways), the gateway alice's page is on is SIGKILLed:
/// the page moves to the other one and every message is drawn once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_cluster_the_page_moves_to_the_other_gateway() {
    use std::io::BufRead;
    let chromium = im_pipeline_tests::chromium();
    let dir = tempfile::tempdir().unwrap();
    let nats = im_harness::free_base();
    let http = im_harness::free_ports(2);
    let metrics = im_harness::free_ports(16);
    let mut up = Command::new(im_harness::workspace_binary("imctl").unwrap())
        .args(["up", "--cluster", "--data-dir"])
        .arg(dir.path())
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--nats-port", &nats.to_string()])
        .args(["--nats-monitor-port", &(nats + 5000).to_string()])
        .args(["--metrics-port", &metrics.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("imctl up runs");
    let pid = up.id();
    let stdout = std::io::BufReader::new(up.stdout.take().unwrap());
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let stop = |up: &mut std::process::Child| {
        let _ = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while up.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let ready = loop {
        match seen.recv_timeout(Duration::from_secs(180)) {
            Ok(line) if line.starts_with("ready:") => break line,
            Ok(line) => eprintln!("up: {line}"),
            Err(_) => {
                stop(&mut up);
                panic!("imctl up --cluster was not ready within 3 minutes");
            }
        }
    };
    eprintln!("up: {ready}");
    let env = [
        ("IM_APP_URL", format!("http://127.0.0.1:{http}/app/")),
        ("IM_CHROMIUM", chromium),
        ("IM_SCREENSHOT", String::new()),
    ];
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_node_script(
            "integration/browser.js",
            &env,
            Duration::from_secs(240),
            |gateway| {
                let victim = instance_pid(pid, gateway)
                    .unwrap_or_else(|| panic!("no process of imctl up is {gateway}"));
                let _ = Command::new("kill")
                    .args(["-9", &victim.to_string()])
                    .status();
            },
        )
    }));
    stop(&mut up);
    let (done, killed) = outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    assert_eq!(done["ok"], true, "{done}");
    assert!(
        killed.is_some_and(|g| g.starts_with("gateway-")),
        "a cluster gateway was killed"
    );
}
