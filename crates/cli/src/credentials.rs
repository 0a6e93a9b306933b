//! `imctl credentials`: make (where missing) every secret a deployment
//! needs in a data directory, and say where each is: the roles' NATS
//! credentials and the nats-server `authorization` block that grants them,
//! the user-token and service-token keys. `imctl up` makes the same; this
//! is for deployments that start the processes themselves (Kubernetes:
//! `infra/k8s/README.md` turns these files into Secrets).

use clap::Args;

#[derive(Args, Debug)]
pub struct CredentialsArgs {
    /// Data directory to keep them in.
    #[arg(long, env = "IM_DATA_DIR", default_value = "./data")]
    pub data_dir: std::path::PathBuf,
    /// Also write `nats-routes.conf` (the route password and the routes to
    /// these `host:port`s) for a cluster's `cluster { include … }`.
    #[arg(long, value_delimiter = ',')]
    pub routes: Vec<String>,
}

pub fn run(args: CredentialsArgs) -> anyhow::Result<()> {
    use im_runtime::{nats_auth, secrets};
    let dir = &args.data_dir;
    let roles = nats_auth::ensure_credentials(dir)?;
    let conf = dir.join("nats-auth.conf");
    let _ = std::fs::remove_file(&conf);
    secrets::create_private(&conf, nats_auth::server_config(&roles).as_bytes())?;
    let route = dir.join("credentials").join("nats-route");
    let password = im_harness::nats::route_password(dir)?;
    if !args.routes.is_empty() {
        let path = dir.join("nats-routes.conf");
        let _ = std::fs::remove_file(&path);
        let text = im_harness::nats::routes_conf(&args.routes, Some(&password), None);
        secrets::create_private(&path, text.as_bytes())?;
        println!("cluster routes: {}", path.display());
    }
    secrets::load_or_create(dir)?;
    secrets::load_or_create_service(dir)?;
    println!("nats-server authorization: {}", conf.display());
    println!("route password: {}", route.display());
    for role in &roles {
        println!(
            "role {:<10} {}",
            role.user,
            nats_auth::credentials_path(dir, &role.user).display()
        );
    }
    println!("user-token key: {}", secrets::secret_path(dir).display());
    println!(
        "service-token key: {}",
        secrets::service_secret_path(dir).display()
    );
    println!("(all mode 0600; a process takes its role with IM_NATS_CREDS=<file>)");
    Ok(())
}
