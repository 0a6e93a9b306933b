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
    /// A service token (`svc: true`) for the HTTP API.
    #[arg(long)]
    pub service: bool,
}

pub fn parse_ttl(text: &str) -> anyhow::Result<i64> {
    im_runtime::config::parse_duration_secs(text)
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
    println!(
        "{}",
        im_gateway::auth::mint(
            &im_runtime::secrets::resolve(args.secret.as_deref(), &args.data_dir)?,
            &claims
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("30m").unwrap(), 1800);
        assert_eq!(parse_ttl("1h").unwrap(), 3600);
        assert_eq!(parse_ttl("7d").unwrap(), 604_800);
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
