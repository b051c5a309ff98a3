//! `drydock key backup-only`: derive a backup-only key from the identity.
//! `drydock key maintenance`: write a new maintenance key and make the repository ready for it.
//! `drydock key recover-config`: rebuild the repository's `config` with the identity.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::{Context, Output};
use crate::crypto::{self, BackupKey, KeyFile};
use crate::error::{Error, Result};
use crate::repo::maintenance;
use crate::repo::recover::{self, Source};
use crate::term;

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Write a backup-only key (can back up, cannot decrypt); needs the identity as --key.
    BackupOnly {
        /// Where to write it (mode 0600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Write a new maintenance key (runs forget, prune and check; cannot decrypt) and make it
    /// the repository's only one; needs the identity as --key. Snapshots are rewritten with
    /// summaries it can read (their ids change), registry blobs stored again for it.
    Maintenance {
        /// Where to write it (mode 0600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Blobs to re-encrypt in parallel.
        #[arg(long, default_value_t = 2, value_name = "N")]
        parallel: usize,
    },
    /// Rebuild a lost, damaged or replaced `config` from the copies snapshots carry, and
    /// vouch for it with the identity (needed once after `init --recipient`).
    RecoverConfig,
}

pub async fn run(ctx: &Context, cmd: KeyCommand) -> Result<Output> {
    match cmd {
        KeyCommand::BackupOnly { out } => backup_only(ctx, out).await,
        KeyCommand::RecoverConfig => recover_config(ctx).await,
        KeyCommand::Maintenance { out, parallel } => maintenance(ctx, out, parallel).await,
    }
}

async fn maintenance(ctx: &Context, out: PathBuf, parallel: usize) -> Result<Output> {
    if out.exists() {
        return Err(Error::Usage(format!(
            "{} already exists; refusing to overwrite a key file",
            out.display()
        )));
    }
    let store = ctx.store().await?;
    let KeyFile::Identity(identity) = ctx.key()? else {
        return Err(Error::Key(
            "writing a maintenance key needs the repository identity (AGE-SECRET-KEY-…)".into(),
        ));
    };
    let (key, done) = maintenance::install(store.clone(), &identity, parallel).await?;
    crypto::write_secret_file(&out, &key.to_file_text())?;
    let mut text = format!(
        "maintenance key for repository {} written to {} (any earlier maintenance key no longer works)\n",
        key.repository.short(),
        out.display()
    );
    for (old, new) in &done.snapshots {
        text += &format!("snapshot {} is now {}\n", old.short(), new.short());
    }
    text += &format!(
        "{} snapshot(s) summarised, {} registry blob(s) stored again for the maintenance key\n",
        done.snapshots.len(),
        done.registry_blobs
    );
    let renamed: Vec<_> = done
        .snapshots
        .iter()
        .map(|(o, n)| json!({"old": o.to_hex(), "new": n.to_hex()}))
        .collect();
    Ok(Output::ok(
        text,
        json!({"repository": key.repository.to_hex(), "maintenance_key_file": out,
            "snapshots": renamed, "registry_blobs": done.registry_blobs}),
    ))
}

async fn recover_config(ctx: &Context) -> Result<Output> {
    let store = ctx.store().await?;
    let KeyFile::Identity(identity) = ctx.key()? else {
        return Err(Error::Key(
            "recovering the config needs the repository identity (AGE-SECRET-KEY-…), not a backup-only key".into(),
        ));
    };
    let r = recover::recover_config(store.clone(), &identity).await?;
    let (what, from) = match &r.source {
        Source::AlreadyVouched => (
            "is authentic and vouched for; nothing to do".to_string(),
            None,
        ),
        Source::Current => ("now carries the identity's tag".to_string(), None),
        Source::Snapshot(key) => (
            format!("was rebuilt from the copy in {}", term::esc(key)),
            Some(key.clone()),
        ),
    };
    Ok(Output::ok(
        format!(
            "the config of repository {} at {} {what}\n",
            r.id.short(),
            store.describe()
        ),
        json!({"repository": r.id.to_hex(), "written": r.source != Source::AlreadyVouched, "from": from}),
    ))
}

async fn backup_only(ctx: &Context, out: PathBuf) -> Result<Output> {
    let repo = ctx.open_repo().await?;
    repo.keys.identity("deriving a backup-only key")?;
    let key = BackupKey {
        repository: repo.config.id,
        recipient: repo.keys.recipient.clone(),
        chunk_key: repo.keys.chunk_key("deriving a backup-only key")?.clone(),
    };
    crypto::write_secret_file(&out, &key.to_file_text())?;
    Ok(Output::ok(
        format!(
            "backup-only key for repository {} written to {}\n",
            repo.config.id.short(),
            out.display()
        ),
        json!({"repository": repo.config.id.to_hex(), "backup_key_file": out}),
    ))
}
