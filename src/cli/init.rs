//! `drydock init`: create a repository, an identity and a backup-only key.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::{Context, Output};
use crate::crypto::{self, BackupKey, Identity, Recipient};
use crate::error::{Error, Result};
use crate::repo::Repository;

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Write the new repository identity here (mode 0600). Keep it offline: it reads everything.
    #[arg(long, value_name = "FILE", required_unless_present = "recipient")]
    pub identity_out: Option<PathBuf>,
    /// Write a backup-only key here (mode 0600), for the backup CronJob.
    #[arg(long, value_name = "FILE")]
    pub backup_key_out: Option<PathBuf>,
    /// Write a maintenance key here (mode 0600), for the forget/prune CronJob: it runs
    /// forget, prune and check and can delete, but reads no content (docs/SECURITY.md §1).
    #[arg(long, value_name = "FILE")]
    pub maintenance_key_out: Option<PathBuf>,
    /// S3 Object Lock (WORM): write every object with this retention, GOVERNANCE:DAYS or
    /// COMPLIANCE:DAYS. The bucket must have Object Lock enabled; forget and prune then
    /// delete nothing before its date, and prune extends the retention of what stays.
    #[arg(long, value_name = "MODE:DAYS")]
    pub object_lock: Option<crate::store::WriteRetention>,
    /// S3 storage class for data packs (STANDARD_IA, GLACIER_IR, GLACIER, DEEP_ARCHIVE…);
    /// config, index, snapshots and tree packs always stay in STANDARD, so backups, forget
    /// and prune never read an archived object. `backup --storage-class` overrides it.
    #[arg(long, value_name = "CLASS")]
    pub storage_class: Option<crate::store::StorageClass>,
    /// Encrypt to an existing age identity's public key (age1…) instead of a new identity.
    #[arg(long, value_name = "AGE1…", conflicts_with = "identity_out")]
    pub recipient: Option<String>,
}

pub async fn run(ctx: &Context, args: InitArgs) -> Result<Output> {
    let store = ctx.store().await?;
    for p in [
        &args.identity_out,
        &args.backup_key_out,
        &args.maintenance_key_out,
    ]
    .into_iter()
    .flatten()
    {
        if p.exists() {
            return Err(Error::Usage(format!(
                "{} already exists; refusing to overwrite a key file",
                p.display()
            )));
        }
    }
    let (recipient, identity): (Recipient, Option<Identity>) = match &args.recipient {
        Some(r) => (crypto::parse_recipient(r)?, None),
        None => {
            let id = Identity::generate();
            (id.to_public(), Some(id))
        }
    };
    // The identity goes to disk before the repository exists: a repository whose only
    // identity was lost is useless.
    if let (Some(id), Some(path)) = (&identity, &args.identity_out) {
        crypto::write_secret_file(path, &crypto::identity_file_text(id))?;
    }
    let maintenance = args
        .maintenance_key_out
        .as_ref()
        .map(|_| Identity::generate());
    let maintenance_recipient = maintenance.as_ref().map(Identity::to_public);
    let created = match Repository::init(
        store.clone(),
        &recipient,
        maintenance_recipient.as_ref(),
        args.object_lock,
        args.storage_class.as_ref(),
        identity.as_ref(),
    )
    .await
    {
        Ok(x) => x,
        Err(e) => {
            if let (Some(_), Some(path)) = (&identity, &args.identity_out) {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
    };
    let config = &created.config;
    if let Some(path) = &args.backup_key_out {
        let key = BackupKey {
            repository: config.id,
            recipient: recipient.clone(),
            chunk_key: created.chunk_key.clone(),
        };
        crypto::write_secret_file(path, &key.to_file_text())?;
    }
    if let (Some(path), Some(identity)) = (&args.maintenance_key_out, maintenance) {
        let key = crate::repo::keys::maintenance_key(
            config,
            &created.chunk_key,
            identity,
            created.maintenance.clone(),
        )?;
        crypto::write_secret_file(path, &key.to_file_text())?;
    }
    let mut text = format!(
        "created repository {} at {}\n",
        config.id.short(),
        store.describe()
    );
    if let Some(p) = &args.identity_out {
        text += &format!(
            "identity (reads everything; keep offline): {}\n",
            p.display()
        );
    }
    if let Some(p) = &args.backup_key_out {
        text += &format!(
            "backup-only key (for CronJobs; cannot decrypt): {}\n",
            p.display()
        );
    }
    if let Some(p) = &args.maintenance_key_out {
        text += &format!(
            "maintenance key (for forget and prune; cannot decrypt): {}\n",
            p.display()
        );
    }
    if identity.is_none() {
        // Only the identity can tag the config for itself (FORMAT.md §4).
        text += "before the identity reads this repository, run `drydock key recover-config` once with it as --key\n";
    }
    Ok(Output::ok(
        text,
        json!({
            "repository": config.id.to_hex(),
            "location": store.describe(),
            "recipient": config.recipient,
            "identity_file": args.identity_out,
            "backup_key_file": args.backup_key_out,
            "maintenance_key_file": args.maintenance_key_out,
        }),
    ))
}
