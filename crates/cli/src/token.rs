//! `imctl token`: mint a JWT the gateway accepts.

use clap::Args;

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[arg(long)]
    pub user: String,
    /// Device id (the `dev` claim).
    #[arg(long, default_value = "cli")]
    pub device: String,
    /// The gateway's JWT secret; by default the one `imctl up` made in
    /// --data-dir.
    #[arg(long, env = "IM_JWT_SECRET")]
    pub secret: Option<String>,
    /// Data directory whose `credentials/jwt-secret` to use.
    #[arg(long, env = "IM_DATA_DIR", default_value = "./data")]
    pub data_dir: std::path::PathBuf,
    /// Lifetime: 90s, 30m, 1h, 7d, or seconds.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// A service token for the HTTP API, signed with the service key
    /// (`--service-secret`, or the data directory's `credentials/service-secret`).
    #[arg(long)]
    pub service: bool,
    /// The gateway's service-token key.
    #[arg(long, env = "IM_SERVICE_SECRET")]
    pub service_secret: Option<String>,
}

pub fn parse_ttl(text: &str) -> anyhow::Result<i64> {
    Ok(im_runtime::config::parse_duration_secs(text)?)
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        im_events::ids::is_valid_id(&args.user),
        "--user {:?} is not a valid id",
        args.user
    );
    let claims = im_gateway::auth::Claims {
        sub: args.user,
        dev: args.device,
        exp: chrono::Utc::now().timestamp() + parse_ttl(&args.ttl)?,
        svc: args.service,
    };
    let key = if args.service {
        match &args.service_secret {
            Some(secret) => secret.clone(),
            None => im_runtime::secrets::read_service(&args.data_dir)?,
        }
    } else {
        im_runtime::secrets::resolve(args.secret.as_deref(), &args.data_dir)?
    };
    println!("{}", im_gateway::auth::mint(&key, &claims));
    Ok(())
}

#[cfg(test)]
mod tests;
