//! `imctl schema apply|print`: the ScyllaDB schema (keyspace, tables),
//! applied idempotently; the embedded backend creates its own.

use clap::{Args, Subcommand};
use im_runtime::stores::StoreUri;

#[derive(Args, Debug)]
pub struct SchemaArgs {
    /// scylla://host1,host2/keyspace[?dc=…&rf=…&hot_ttl=…]
    #[arg(long, env = "IM_STORE", global = true)]
    pub store: Option<String>,
    #[command(subcommand)]
    pub command: SchemaCommand,
}

#[derive(Subcommand, Debug)]
pub enum SchemaCommand {
    /// Create the keyspace and tables if missing (safe to run again).
    Apply,
    /// Print the CQL without connecting.
    Print,
}

fn scylla(store: Option<&str>) -> anyhow::Result<im_store_scylla::ScyllaConfig> {
    match StoreUri::parse(store, std::path::Path::new("./data"))? {
        StoreUri::Scylla(config) => Ok(config),
        StoreUri::Sqlite(dir) => anyhow::bail!(
            "the embedded store ({}) creates its schema itself; pass --store scylla://host/keyspace",
            dir.display()
        ),
    }
}

pub fn run(args: SchemaArgs) -> anyhow::Result<()> {
    let config = scylla(args.store.as_deref())?;
    match args.command {
        SchemaCommand::Print => print!("{}", im_store_scylla::schema::cql_file(&config)),
        SchemaCommand::Apply => {
            let total = im_store_scylla::schema::statements(&config).len();
            eprintln!(
                "applying {total} statements to keyspace {} on {}",
                config.keyspace,
                config.hosts.join(",")
            );
            let applied = im_store_scylla::ScyllaStore::apply_schema(&config)?;
            println!(
                "schema of keyspace {} is current ({} statements, all IF NOT EXISTS)",
                config.keyspace,
                applied.len()
            );
        }
    }
    Ok(())
}
