//! `drydock migrate`: bring a format version 1 repository to version 2, in place.

use clap::Args;

use super::{Context, Output};
use crate::crypto::KeyFile;
use crate::error::{Error, Result};
use crate::repo::migrate;

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// Concurrent uploads and CPU workers.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
}

pub async fn run(ctx: &Context, args: MigrateArgs) -> Result<Output> {
    let store = ctx.store().await?;
    let KeyFile::Identity(identity) = ctx.key()? else {
        return Err(Error::Key(
            "migrating needs the repository identity (AGE-SECRET-KEY-…), not a backup-only key"
                .into(),
        ));
    };
    let m = migrate::migrate(store.clone(), &identity, args.parallel).await?;
    let text = if m.converted {
        format!(
            "repository {} at {} is now format version 2: {} blobs copied into {} packs, {} registry blobs and {} snapshots rewritten, {} version 1 objects deleted\n",
            &m.repository[..8],
            store.describe(),
            m.blobs_copied,
            m.packs_copied,
            m.registry_blobs,
            m.snapshots,
            m.objects_deleted
        )
    } else {
        format!(
            "repository {} at {} is already format version 2; {} version 1 objects left by an earlier run deleted\n",
            &m.repository[..8],
            store.describe(),
            m.objects_deleted
        )
    };
    Ok(Output::ok(
        text,
        serde_json::to_value(&m).expect("serialises"),
    ))
}
