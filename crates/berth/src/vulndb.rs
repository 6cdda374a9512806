//! `berth vulndb import|sync|status`: the vulnerability database from the command line, on
//! the configured database (SQLite's `vulndb.db` beside `berth.db`, or PostgreSQL), with or
//! without a running server.

use std::path::PathBuf;

use anyhow::Context;
use berth_jobs::vulndb::{self, ImportOptions};

use crate::{init_logging, open_meta, settings};

#[derive(clap::Subcommand)]
pub enum VulndbCommand {
    /// Import vulnerability data from files, directories or URLs: osv.dev's `all.zip`
    /// exports (per ecosystem or whole), directories of OSV JSON records, the Debian
    /// Security Tracker's JSON, Alpine secdb files. Each feed in the sources replaces what the
    /// database had of it (records it no longer has are withdrawn) unless --merge. Prints what
    /// changed. A source that fails to download or read imports nothing.
    Import {
        #[command(flatten)]
        common: CommonArgs,
        /// Only add and change records; withdraw nothing.
        #[arg(long)]
        merge: bool,
        /// Files, directories or http(s) URLs.
        #[arg(required = true, value_name = "SOURCE")]
        sources: Vec<String>,
    },
    /// Import what vulndb.sources names (what the vulndb.schedule job does).
    Sync {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// The published version: when, from what, how many records per feed.
    Status {
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(clap::Args)]
pub struct CommonArgs {
    /// TOML configuration file, as for `berth serve`.
    #[arg(long, short, env = "BERTH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory, as for `berth serve`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

pub fn run(cmd: VulndbCommand) -> anyhow::Result<()> {
    let common = match &cmd {
        VulndbCommand::Import { common, .. }
        | VulndbCommand::Sync { common }
        | VulndbCommand::Status { common } => common,
    };
    let mut config = settings::load(common.config.as_deref())?;
    if let Some(dir) = &common.data_dir {
        config.data_dir = dir.clone();
    }
    config.validate().map_err(anyhow::Error::msg)?;
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let meta = open_meta(&config).await?;
        let store = meta
            .vuln_store(&config.data_dir.join(vulndb::SQLITE_FILE))
            .await
            .context("opening the vulnerability database")?;
        let holder = format!("cli:{}", berth_jobs::worker_name());
        let outcome = match cmd {
            VulndbCommand::Import { merge, sources, .. } => {
                let mut opts = ImportOptions::from_config(&config.vulndb, &holder);
                opts.merge = merge;
                let report = vulndb::import(&store, &sources, &opts).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
            VulndbCommand::Sync { .. } => {
                let opts = ImportOptions::from_config(&config.vulndb, &holder);
                let report = vulndb::import(&store, &config.vulndb.sources, &opts).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
            VulndbCommand::Status { .. } => {
                let status = berth_service::vulndb::status(&store).await?;
                println!("{}", serde_json::to_string_pretty(&status)?);
                Ok(())
            }
        };
        meta.close().await;
        outcome
    })
}
