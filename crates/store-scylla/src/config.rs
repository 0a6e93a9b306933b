//! `IM_STORE=scylla://host1,host2:9042/keyspace?dc=dc1&rf=3&consistency=local_quorum&hot_ttl=14d`

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

impl ScyllaConfig {
    /// Parse a `scylla://` URI.
    pub fn parse(uri: &str) -> Result<Self, String> {
        let rest = uri
            .strip_prefix("scylla://")
            .ok_or_else(|| format!("{uri:?} is not a scylla:// URI"))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, keyspace) = location
            .split_once('/')
            .ok_or_else(|| format!("{uri:?} names no keyspace: scylla://host1,host2/keyspace"))?;
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
            return Err(format!("{uri:?} names no host"));
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
                other => {
                    return Err(format!(
                        "unknown scylla:// option {other:?} (dc, rf, consistency, hot_ttl)"
                    ))
                }
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_with_defaults() {
        let config = ScyllaConfig::parse("scylla://10.0.0.1,10.0.0.2:19042/im").unwrap();
        assert_eq!(config.hosts, vec!["10.0.0.1:9042", "10.0.0.2:19042"]);
        assert_eq!(config.keyspace, "im");
        assert_eq!(config.replication_factor, 3);
        assert_eq!(config.consistency, Consistency::LocalQuorum);
        assert_eq!(config.datacenter, None);
        let tuned =
            ScyllaConfig::parse("scylla://a/im_prod?dc=eu1&rf=5&consistency=quorum&hot_ttl=30d")
                .unwrap();
        assert_eq!(tuned.datacenter.as_deref(), Some("eu1"));
        assert_eq!(tuned.replication_factor, 5);
        assert_eq!(tuned.consistency, Consistency::Quorum);
        assert_eq!(tuned.hot_ttl_secs, 30 * 86_400);
    }

    #[test]
    fn bad_uris_say_what_is_wrong() {
        for (uri, needle) in [
            ("sqlite:///x", "not a scylla"),
            ("scylla://host", "no keyspace"),
            ("scylla:///im", "no host"),
            ("scylla://h/bad-name", "keyspace"),
            ("scylla://h/1im", "keyspace"),
            ("scylla://h/im?rf=0", "rf="),
            ("scylla://h/im?consistency=most", "consistency"),
            ("scylla://h/im?color=red", "unknown"),
        ] {
            let error = ScyllaConfig::parse(uri).unwrap_err();
            assert!(error.contains(needle), "{uri}: {error}");
        }
    }
}
