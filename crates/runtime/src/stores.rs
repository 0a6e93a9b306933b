//! Which store backend a process uses: `IM_STORE=sqlite:///path` (the
//! default: the embedded files in the data directory) or
//! `IM_STORE=scylla://[user:password@]host1,host2/keyspace[?tls=true&ca=/path/ca.pem]`. Every function, the gateway and
//! imctl open their stores here.
//!
//! The ScyllaDB backend is the `scylla` cargo feature (on by default): a
//! build without it links no driver and refuses a `scylla://` URI in words.

use std::path::{Path, PathBuf};
use std::sync::Arc;
#[cfg(feature = "scylla")]
use std::sync::OnceLock;

use im_store::sqlite::{self, Durability};
use im_store::{ConversationStore, NotificationStore, UserStore};
#[cfg(feature = "scylla")]
use im_store_scylla::{ScyllaConfig, ScyllaStore};

#[derive(Debug, Clone, PartialEq)]
pub enum StoreUri {
    Sqlite(PathBuf),
    #[cfg(feature = "scylla")]
    Scylla(ScyllaConfig),
}

impl StoreUri {
    /// Parse `IM_STORE`; none means the embedded files in `data_dir`.
    pub fn parse(uri: Option<&str>, data_dir: &Path) -> crate::Result<Self> {
        let Some(uri) = uri.filter(|u| !u.is_empty()) else {
            return Ok(StoreUri::Sqlite(data_dir.to_path_buf()));
        };
        if let Some(path) = uri.strip_prefix("sqlite://") {
            crate::ensure_config!(
                !path.is_empty(),
                "IM_STORE {uri:?} names no directory: sqlite:///var/lib/im"
            );
            return Ok(StoreUri::Sqlite(PathBuf::from(path)));
        }
        if uri.starts_with("scylla://") {
            #[cfg(feature = "scylla")]
            return ScyllaConfig::parse(uri)
                .map(StoreUri::Scylla)
                .map_err(crate::Error::Config);
            #[cfg(not(feature = "scylla"))]
            crate::bail_config!(
                "IM_STORE names ScyllaDB, but this build has no ScyllaDB backend (built without the `scylla` feature): rebuild with default features, or use sqlite:///path"
            );
        }
        crate::bail_config!(
            "IM_STORE {uri:?} must be sqlite:///path or scylla://host1,host2/keyspace"
        )
    }
}

/// Opens the stores a process needs, sharing one cluster connection.
pub struct Stores {
    uri: StoreUri,
    #[cfg(feature = "scylla")]
    scylla: OnceLock<ScyllaStore>,
}

impl Stores {
    pub fn new(uri: StoreUri) -> Self {
        Stores {
            uri,
            #[cfg(feature = "scylla")]
            scylla: OnceLock::new(),
        }
    }

    pub fn uri(&self) -> &StoreUri {
        &self.uri
    }

    #[cfg(feature = "scylla")]
    fn scylla(&self, config: &ScyllaConfig) -> crate::Result<ScyllaStore> {
        if let Some(store) = self.scylla.get() {
            return Ok(store.clone());
        }
        let store = ScyllaStore::connect(config.clone())?;
        Ok(self.scylla.get_or_init(|| store).clone())
    }

    /// The conversation store: writable with `owner` durability by its
    /// owner (dedupe), read-only otherwise.
    pub fn conversations(
        &self,
        owner: Option<Durability>,
    ) -> crate::Result<Arc<dyn ConversationStore>> {
        Ok(match &self.uri {
            StoreUri::Sqlite(dir) => Arc::new(sqlite::conversations_in(dir, owner)?),
            #[cfg(feature = "scylla")]
            StoreUri::Scylla(config) => Arc::new(self.scylla(config)?),
        })
    }

    pub fn users(&self, owner: Option<Durability>) -> crate::Result<Arc<dyn UserStore>> {
        Ok(match &self.uri {
            StoreUri::Sqlite(dir) => Arc::new(sqlite::users_in(dir, owner)?),
            #[cfg(feature = "scylla")]
            StoreUri::Scylla(config) => Arc::new(self.scylla(config)?),
        })
    }

    pub fn notifications(
        &self,
        owner: Option<Durability>,
    ) -> crate::Result<Arc<dyn NotificationStore>> {
        Ok(match &self.uri {
            StoreUri::Sqlite(dir) => Arc::new(sqlite::notifications_in(dir, owner)?),
            #[cfg(feature = "scylla")]
            StoreUri::Scylla(config) => Arc::new(self.scylla(config)?),
        })
    }
}

#[cfg(test)]
mod tests;
