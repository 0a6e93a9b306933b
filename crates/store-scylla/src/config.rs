//! `IM_STORE=scylla://[user:password@]host1,host2:9042/keyspace?dc=dc1&rf=3&consistency=local_quorum&hot_ttl=14d&tls=true&ca=/path/ca.pem`

use scylla::statement::Consistency;

#[derive(Debug, Clone, PartialEq)]
pub struct ScyllaConfig {
    pub hosts: Vec<String>,
    pub keyspace: String,
    /// The local datacenter: token-aware routing prefers it, and the
    /// keyspace replicates to it.
    pub datacenter: Option<String>,
    pub replication_factor: u32,
    pub consistency: Consistency,
    /// Time-to-live of hot message rows (seconds): the hot window plus the
    /// archiver's grace.
    pub hot_ttl_secs: i64,
    /// How long idempotency keys live (seconds; `keep_idempotency=30d`, at
    /// least 7 days): the table's TTL.
    pub keep_idempotency_secs: i64,
    /// Authenticate with a user and password (`user:password@` in the URI).
    pub login: Option<Login>,
    /// Connect with TLS (`tls=true`, or `ca=` a CA file to trust instead of
    /// the system's roots).
    pub tls: Option<Tls>,
}

#[derive(Clone, PartialEq)]
pub struct Login {
    pub user: String,
    pub password: String,
}

/// The password never shows in logs or errors.
impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login {{ user: {:?}, password: \"***\" }}", self.user)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    /// A CA certificate file (PEM) to trust; none: the system's roots.
    pub ca: Option<std::path::PathBuf>,
}

impl Tls {
    /// The rustls client configuration: the CA given, or the system's roots.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(ca) => {
                let certs = rustls::pki_types::CertificateDer::pem_file_iter(ca)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("scylla ca={}: {e}", ca.display()))?;
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| format!("scylla ca={}: {e}", ca.display()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
            }
        }
        if roots.is_empty() {
            return Err("scylla tls=true: no CA certificate to trust; give ca=/path/ca.pem".into());
        }
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
    }
}

pub const DEFAULT_PORT: u16 = 9042;

fn parse_consistency(text: &str) -> Option<Consistency> {
    Some(match text.to_ascii_lowercase().as_str() {
        "one" => Consistency::One,
        "quorum" => Consistency::Quorum,
        "local_quorum" => Consistency::LocalQuorum,
        "each_quorum" => Consistency::EachQuorum,
        "all" => Consistency::All,
        "local_one" => Consistency::LocalOne,
        _ => return None,
    })
}

fn parse_secs(text: &str) -> Option<i64> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: i64 = number.parse().ok()?;
    Some(
        value
            * match unit {
                "" | "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                _ => return None,
            },
    )
}

/// The URI with its password hidden, for messages.
pub fn redact(uri: &str) -> String {
    let Some(rest) = uri.strip_prefix("scylla://") else {
        return uri.to_string();
    };
    let end = rest.find('?').unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((userinfo, _)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("scylla://{user}:***@{}", &rest[userinfo.len() + 1..])
        }
        None => uri.to_string(),
    }
}

impl ScyllaConfig {
    /// Parse a `scylla://` URI.
    pub fn parse(uri: &str) -> Result<Self, String> {
        let shown = redact(uri);
        let rest = uri
            .strip_prefix("scylla://")
            .ok_or_else(|| format!("{shown:?} is not a scylla:// URI"))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (login, location) = match location.rsplit_once('@') {
            Some((userinfo, location)) => {
                let (user, password) = userinfo.split_once(':').ok_or_else(|| {
                    "scylla:// credentials must be user:password@ before the hosts".to_string()
                })?;
                if user.is_empty() {
                    return Err("scylla:// credentials name no user".into());
                }
                (
                    Some(Login {
                        user: user.to_string(),
                        password: password.to_string(),
                    }),
                    location,
                )
            }
            None => (None, location),
        };
        let (hosts, keyspace) = location
            .split_once('/')
            .ok_or_else(|| format!("{shown:?} names no keyspace: scylla://host1,host2/keyspace"))?;
        let hosts: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| {
                if h.contains(':') {
                    h.to_string()
                } else {
                    format!("{h}:{DEFAULT_PORT}")
                }
            })
            .collect();
        if hosts.is_empty() {
            return Err(format!("{shown:?} names no host"));
        }
        let keyspace = keyspace.trim_end_matches('/').to_string();
        if keyspace.is_empty()
            || keyspace.len() > 48
            || !keyspace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || keyspace.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(format!(
                "keyspace {keyspace:?} must be 1-48 letters, digits or _, not starting with a digit"
            ));
        }
        let mut config = ScyllaConfig {
            hosts,
            keyspace,
            datacenter: None,
            replication_factor: 3,
            consistency: Consistency::LocalQuorum,
            hot_ttl_secs: 14 * 86_400,
            keep_idempotency_secs: 30 * 86_400,
            login,
            tls: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "dc" => config.datacenter = Some(value.to_string()),
                "rf" => {
                    config.replication_factor = value
                        .parse()
                        .ok()
                        .filter(|rf| *rf >= 1)
                        .ok_or_else(|| format!("rf={value:?} must be a positive number"))?
                }
                "consistency" => {
                    config.consistency = parse_consistency(value).ok_or_else(|| {
                        format!("consistency={value:?} is not a CQL consistency level")
                    })?
                }
                "hot_ttl" => {
                    config.hot_ttl_secs = parse_secs(value)
                        .filter(|s| *s > 0)
                        .ok_or_else(|| format!("hot_ttl={value:?}: expected e.g. 14d"))?
                }
                "keep_idempotency" => {
                    config.keep_idempotency_secs = parse_secs(value)
                        .filter(|s| *s >= 7 * 86_400)
                        .ok_or_else(|| {
                            format!("keep_idempotency={value:?}: at least 7d (a publisher retrying within a week must still be answered as a repeat), e.g. 30d")
                        })?
                }
                "tls" => match value {
                    "true" | "1" => {
                        config.tls.get_or_insert(Tls { ca: None });
                    }
                    "false" | "0" => config.tls = None,
                    _ => return Err(format!("tls={value:?} must be true or false")),
                },
                "ca" => {
                    if value.is_empty() {
                        return Err("ca= names no file".into());
                    }
                    config.tls = Some(Tls {
                        ca: Some(value.into()),
                    })
                }
                other => {
                    return Err(format!(
                        "unknown scylla:// option {other:?} (dc, rf, consistency, hot_ttl, keep_idempotency, tls, ca)"
                    ))
                }
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests;
