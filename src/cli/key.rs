//! `drydock key backup-only`: derive a backup-only key from the identity.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::{Context, Output};
use crate::crypto::{self, BackupKey};
use crate::error::Result;

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Write a backup-only key (can back up, cannot decrypt); needs the identity as --key.
    BackupOnly {
        /// Where to write it (mode 0600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

pub async fn run(ctx: &Context, cmd: KeyCommand) -> Result<Output> {
    let KeyCommand::BackupOnly { out } = cmd;
    let repo = ctx.open_repo().await?;
    repo.keys.identity("deriving a backup-only key")?;
    let key = BackupKey {
        repository: repo.config.id,
        recipient: repo.keys.recipient.clone(),
        chunk_key: repo.keys.chunk_key.clone(),
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
