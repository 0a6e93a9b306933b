//! `imctl up` runs everything and prints `ready`; `imctl send`, `tail` and
//! `dlq` work against it; each function serves Prometheus metrics.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use im_harness::{free_port, nats_server_binary, workspace_binary};

/// imctl as an operator on this machine: it finds the data directory's
/// admin credentials for the bus through IM_DATA_DIR.
fn imctl_in(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(workspace_binary("imctl").unwrap())
        .env("IM_DATA_DIR", data)
        .args(args)
        .output()
        .expect("imctl runs")
}

/// A child that is stopped if the test ends early (a failed assertion):
/// SIGTERM (imctl up then stops everything it started), SIGKILL after 10 s,
/// so nothing outlives the test.
struct Reaped(std::process::Child);

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while matches!(self.0.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(port: u16, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn imctl_up_send_tail_and_dlq() {
    let data = tempfile::tempdir().unwrap();
    let nats_port = free_port();
    // Six consecutive free ports for the functions' metrics endpoints.
    let metrics_port = (0..200)
        .map(|n| 21_000 + ((std::process::id() as u16).wrapping_mul(7) % 9000) + n * 10)
        .find(|base| (0..6).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()))
        .expect("six free ports");
    let http_port = free_port();
    let mut up = Reaped(
        Command::new(workspace_binary("imctl").unwrap())
            .args(["up", "--data-dir"])
            .arg(data.path())
            .args([
                "--nats-port",
                &nats_port.to_string(),
                "--metrics-port",
                &metrics_port.to_string(),
                "--sqlite-sync",
                "normal",
            ])
            // No --jwt-secret: imctl up makes one in the data directory.
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .args(["--nats-monitor-port", &free_port().to_string()])
            .env("IM_NATS_SERVER", nats_server_binary().unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let first = match lines.next() {
        Some(line) => line.unwrap(),
        None => {
            let mut error = String::new();
            let _ = std::io::Read::read_to_string(&mut up.stderr.take().unwrap(), &mut error);
            panic!("imctl up printed nothing; stderr:\n{error}");
        }
    };
    // Keep draining its stderr so it never blocks on a full pipe.
    let mut stderr = up.stderr.take().unwrap();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    assert!(first.contains("ready"), "{first}");
    let url = format!("nats://127.0.0.1:{nats_port}");

    let mut tail = Reaped(
        Command::new(workspace_binary("imctl").unwrap())
            .env("IM_DATA_DIR", data.path())
            .args([
                "tail",
                "--nats-url",
                &url,
                "--subject",
                "im.events.message.committed",
                "--count",
                "1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let sent = imctl_in(
        data.path(),
        &[
            "send",
            "--nats-url",
            &url,
            "--conversation",
            "dm:cli:user",
            "--sender",
            "cli",
            "--text",
            "from the cli",
        ],
    );
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let sent = imctl_in(
        data.path(),
        &[
            "send",
            "--nats-url",
            &url,
            "--binary",
            "--type",
            "im.message.read",
            "--data",
            r#"{"conversation_id":"dm:cli:user","user_id":"user","seq":9}"#,
        ],
    );
    assert!(sent.status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while tail.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "tail saw no committed message");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut tailed = String::new();
    tail.stdout
        .take()
        .unwrap()
        .read_to_string(&mut tailed)
        .unwrap();
    assert!(tailed.contains("from the cli"), "{tailed}");

    let listing = loop {
        let listing = imctl_in(data.path(), &["dlq", "list", "--nats-url", &url]);
        let text = String::from_utf8_lossy(&listing.stdout).into_owned();
        if text.contains("read_beyond_last_seq") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(listing.contains("read_beyond_last_seq"), "{listing}");
    let shown = imctl_in(data.path(), &["dlq", "show", "--nats-url", &url, "1"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("\"seq\": 9") && shown.contains("Im-Dlq-Reason"),
        "{shown}"
    );

    // Every function serves metrics; dedupe has counted its work.
    let metrics = http_get(metrics_port + 1, "/metrics");
    assert!(metrics.contains("im_processed_total"), "{metrics}");
    assert!(metrics.contains("im_dead_lettered_total"), "{metrics}");

    // The gateway is up with the secret imctl up made; imctl token reads
    // it from the data directory, and the secrets that used to be defaults
    // open nothing.
    let health = http_get(http_port, "/healthz");
    assert!(health.contains("\"ok\""), "{health}");
    let data_dir = data.path().to_str().unwrap();
    let minted = imctl_in(
        data.path(),
        &[
            "token",
            "--user",
            "cli",
            "--device",
            "d",
            "--data-dir",
            data_dir,
            "--ttl",
            "5m",
        ],
    );
    assert!(minted.status.success(), "{minted:?}");
    let token = String::from_utf8_lossy(&minted.stdout).trim().to_string();
    for known in ["dev-secret-change-me", "change-me"] {
        let forged = im_gateway::auth::mint(
            known,
            &im_gateway::auth::Claims {
                sub: "ops".into(),
                dev: String::new(),
                exp: chrono::Utc::now().timestamp() + 300,
                svc: true,
            },
        );
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", http_port)).unwrap();
        write!(
            stream,
            "GET /v1/conversations/g:x/messages HTTP/1.0\r\nAuthorization: Bearer {forged}\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        assert!(text.contains(" 401 "), "{known}: {text}");
    }
    let list = {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", http_port)).unwrap();
        write!(
            stream,
            "GET /v1/users/cli/conversations HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    };
    assert!(list.contains(" 200 "), "{list}");
    assert!(list.contains("dm:cli:user"), "{list}");

    // SIGTERM stops everything.
    Command::new("kill")
        .arg("-TERM")
        .arg(up.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = up.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "imctl up did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", nats_port)).is_err(),
        "nats-server stopped too"
    );
}

/// `imctl up --config FILE`: a TOML file sets the gateway's address and the
/// durability profile (and the rest of what this test needs); the system
/// starts on them, and `imctl config print` shows the file's settings with
/// the secret masked.
#[test]
fn imctl_up_takes_its_settings_from_a_config_file() {
    let data = tempfile::tempdir().unwrap();
    let metrics_port = (0..200)
        .map(|n| 31_000 + ((std::process::id() as u16).wrapping_mul(11) % 9000) + n * 10)
        .find(|base| (0..6).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()))
        .expect("six free ports");
    let http_port = free_port();
    let file = data.path().join("im.toml");
    std::fs::write(
        &file,
        format!(
            "# settings of this deployment\nhttp = \"127.0.0.1:{http_port}\"\ndurability = \"relaxed\"\n\
             nats_port = {}\nmetrics_port = {metrics_port}\nIM_SQLITE_SYNC = \"normal\"\n\
             jwt_secret = \"a-config-file-secret-of-more-than-32-bytes\"\n",
            free_port()
        ),
    )
    .unwrap();
    let mut up = Reaped(
        Command::new(workspace_binary("imctl").unwrap())
            .args(["up", "--data-dir"])
            .arg(data.path())
            .arg("--config")
            .arg(&file)
            .args(["--nats-monitor-port", &free_port().to_string()])
            .env("IM_NATS_SERVER", nats_server_binary().unwrap())
            .env_remove("IM_HTTP")
            .env_remove("IM_DURABILITY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = up.stderr.take().unwrap();
    let first = BufReader::new(up.stdout.take().unwrap())
        .lines()
        .next()
        .map(|l| l.unwrap())
        .unwrap_or_else(|| {
            let mut error = String::new();
            let _ = stderr.read_to_string(&mut error);
            panic!("imctl up printed nothing; stderr:\n{error}")
        });
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    assert!(first.contains("ready"), "{first}");
    assert!(
        first.contains(&format!("gateway ws://127.0.0.1:{http_port}/v1/ws")),
        "{first}"
    );
    assert!(first.contains("durability relaxed"), "{first}");
    assert!(
        http_get(http_port, "/healthz").contains("200"),
        "the gateway answers where the file says"
    );

    let printed = Command::new(workspace_binary("imctl").unwrap())
        .args(["config", "print", "--config"])
        .arg(&file)
        .env_remove("IM_HTTP")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(
        text.contains(&format!("IM_HTTP=127.0.0.1:{http_port}")),
        "{text}"
    );
    assert!(text.contains("IM_DURABILITY=relaxed"), "{text}");
    assert!(text.contains("IM_JWT_SECRET=****"), "{text}");
    assert!(!text.contains("a-config-file-secret"), "{text}");
    // The environment wins over the file.
    let overridden = Command::new(workspace_binary("imctl").unwrap())
        .args(["config", "print", "--config"])
        .arg(&file)
        .env("IM_DURABILITY", "strict")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&overridden.stdout).contains("IM_DURABILITY=strict"));
    // A broken file is refused with the reason.
    std::fs::write(&file, "http = ").unwrap();
    let refused = Command::new(workspace_binary("imctl").unwrap())
        .args(["config", "print", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not TOML"),
        "{refused:?}"
    );
}
