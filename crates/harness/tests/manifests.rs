//! The Kubernetes manifests carry the same trust boundary as `imctl up`:
//! every process takes its own NATS role from its own Secret, NATS takes
//! only authenticated clients and routes, its monitoring port is not
//! served, no secret is shipped, and NetworkPolicies are applied. The
//! NATS configuration, with the files `imctl credentials` makes for it, is
//! checked by nats-server itself.

use std::path::PathBuf;

fn manifest(name: &str) -> String {
    let path = im_harness::workspace_root().join("infra/k8s").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_process_takes_its_own_role_and_nothing_is_shipped() {
    let functions = manifest("functions.yaml");
    for function in im_harness::FUNCTIONS {
        assert!(
            functions.contains(&format!("secretName: im-nats-{function},")),
            "{function} does not mount its role"
        );
        assert!(
            im_runtime::nats_auth::ROLES
                .iter()
                .any(|r| r.name == function),
            "no role {function}"
        );
    }
    assert_eq!(
        functions.matches("IM_NATS_CREDS").count(),
        im_harness::FUNCTIONS.len()
    );
    let gateway = manifest("gateway.yaml");
    assert!(gateway.contains("secretName: im-nats-gateway,"));
    assert!(gateway.contains("IM_NATS_CREDS"));
    let nats = manifest("nats.yaml");
    assert!(nats.contains("include \"auth/nats-auth.conf\""));
    assert!(nats.contains("include \"auth/nats-routes.conf\""));
    assert!(
        !nats.contains("name: monitor, port"),
        "the monitoring port is in the Service"
    );
    assert!(manifest("kustomization.yaml").contains("- network.yaml"));
    let network = manifest("network.yaml");
    assert!(network.contains("name: default-deny"));
    for name in [
        "config.yaml",
        "functions.yaml",
        "gateway.yaml",
        "nats.yaml",
        "schema-job.yaml",
    ] {
        let text = manifest(name);
        for shipped in [
            "change-me",
            "IM_JWT_SECRET:",
            "IM_SERVICE_SECRET:",
            "password:",
        ] {
            assert!(!text.contains(shipped), "{name} ships {shipped:?}");
        }
    }
}

/// The ConfigMap's nats.conf, with the Secret's files as `imctl
/// credentials --routes` makes them, is a configuration nats-server takes.
#[test]
fn the_nats_configuration_with_its_secrets_is_valid() {
    let nats = manifest("nats.yaml");
    let conf: String = nats
        .lines()
        .skip_while(|line| !line.contains("nats.conf: |"))
        .skip(1)
        .take_while(|line| line.starts_with("    ") || line.is_empty())
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    assert!(conf.contains("jetstream"), "{conf}");
    let dir = tempfile::tempdir().unwrap();
    // Mounted at /etc/nats/auth beside the config: nats-server resolves
    // includes relative to the including file.
    let secrets = dir.path().join("auth");
    let output = std::process::Command::new(im_harness::workspace_binary("imctl").unwrap())
        .args(["credentials", "--data-dir"])
        .arg(&secrets)
        .args([
            "--routes",
            "nats-0.nats:6222,nats-1.nats:6222,nats-2.nats:6222",
        ])
        .output()
        .expect("imctl runs");
    assert!(output.status.success(), "{output:?}");
    let routes = std::fs::read_to_string(secrets.join("nats-routes.conf")).unwrap();
    assert!(
        routes.contains("nats://route:") && routes.contains("@nats-2.nats:6222"),
        "{routes}"
    );
    let store = dir.path().join("store");
    let conf = conf.replace("/data/jetstream", &store.display().to_string());
    let path: PathBuf = dir.path().join("nats.conf");
    std::fs::write(&path, conf).unwrap();
    let checked = std::process::Command::new(im_harness::nats_server_binary().unwrap())
        .env("POD_NAME", "nats-0")
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "nats-server refuses the k8s config: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
