//! `key recover-config`: rebuild a lost, damaged or replaced `config` (FORMAT.md §4.1).
//!
//! Every snapshot object carries a copy of the config its writer opened. With the identity,
//! a copy is a candidate when it unseals (its recipient is the identity's, its sealed keys
//! open, its key check and object tag hold) and, if it carries an identity tag, that tag
//! holds too. Candidates the identity vouched for win; otherwise all candidates must agree on
//! one repository. The chosen config is written back with the identity's tag, which is also
//! how a repository made by `init --recipient` gets one.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::auth::{AuthKey, Authenticator};
use super::config::{self, RepoConfig};
use super::snapshot::Envelope;
use crate::crypto::{ChunkKey, Identity};
use crate::error::{Error, Result};
use crate::ids::{sha256, RepoId};
use crate::store::{PutMode, Store};

/// Where the config written came from.
#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    /// The current config was fine and vouched for; nothing was written.
    AlreadyVouched,
    /// The current config unsealed but had no identity tag; it now has one.
    Current,
    /// The copy in this snapshot object.
    Snapshot(String),
}

#[derive(Debug)]
pub struct Recovered {
    pub id: RepoId,
    pub source: Source,
}

struct Candidate {
    config: RepoConfig,
    chunk_key: ChunkKey,
    vouched: bool,
    source: Source,
}

/// A candidate if the identity can open it; `None` otherwise (another repository's copy, a
/// forgery, damage).
fn candidate(bytes: &[u8], identity: &Identity, source: Source) -> Option<Candidate> {
    let config = RepoConfig::parse(bytes).ok()?;
    let unsealed = config.unseal(identity).ok()?;
    Some(Candidate {
        vouched: unsealed.vouched,
        chunk_key: unsealed.chunk_key,
        config,
        source,
    })
}

/// The config copies of every snapshot object whose own tag their copy's chunk key checks.
async fn snapshot_copies(store: &Arc<dyn Store>, identity: &Identity) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for o in store.list("snapshots/").await? {
        let bytes = match store.get(&o.key).await {
            Ok(b) => b,
            Err(Error::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        // The copy names the chunk key its snapshot's tag must verify with.
        let Ok(Envelope {
            config: Some(copy), ..
        }) = Envelope::unverified(&bytes, &o.key)
        else {
            continue;
        };
        let Some(c) = candidate(&copy, identity, Source::Snapshot(o.key.clone())) else {
            continue;
        };
        let auth = Authenticator::new(AuthKey::objects(&c.chunk_key), c.config.id);
        if Envelope::open(&bytes, &auth, &o.key).is_ok() {
            out.push(c);
        }
    }
    Ok(out)
}

/// Pick the config to write: the identity's own, else the one every candidate agrees on.
fn choose(candidates: Vec<Candidate>) -> Result<Candidate> {
    let (vouched, others): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|c| c.vouched);
    let pool = if vouched.is_empty() {
        // Nothing the identity tagged: any holder of the backup-only key could have written
        // these, so they must all say the same, parameters included.
        if others
            .windows(2)
            .any(|w| w[0].config.auth_text() != w[1].config.auth_text())
        {
            return Err(Error::Integrity(
                "the config copies here disagree and the identity vouched for none of them, so a holder of the backup-only key may have written one; refusing to choose. Keep the snapshots whose config you trust and run again".into(),
            ));
        }
        others
    } else {
        vouched
    };
    let mut by_repo: BTreeMap<(RepoId, String), Candidate> = BTreeMap::new();
    for c in pool {
        by_repo
            .entry((c.config.id, c.config.key_check.clone()))
            .or_insert(c);
    }
    match by_repo.len() {
        0 => Err(Error::Integrity(
            "no config copy here opens with this identity: no snapshot holds one, or the identity is not this repository's; nothing was written".into(),
        )),
        1 => Ok(by_repo.into_values().next().expect("one")),
        n => Err(Error::Integrity(format!(
            "{n} different repositories claim this location and none is vouched for by the identity (repository ids {}); refusing to choose — remove the objects of the one that is not yours",
            by_repo.keys().map(|(id, _)| id.short()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

pub async fn recover_config(store: Arc<dyn Store>, identity: &Identity) -> Result<Recovered> {
    let current = match store.get(config::KEY).await {
        Ok(b) => Some(b),
        Err(Error::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let current = current.and_then(|b| candidate(&b, identity, Source::Current));
    if let Some(c) = current.as_ref().filter(|c| c.vouched) {
        return Ok(Recovered {
            id: c.config.id,
            source: Source::AlreadyVouched,
        });
    }
    let mut candidates = snapshot_copies(&store, identity).await?;
    candidates.extend(current);
    let mut chosen = choose(candidates)?;
    if !chosen.vouched {
        // Its maintenance secret was sealed by whoever wrote it, perhaps a holder of the
        // backup-only key; no deletion record can exist yet (the identity never opened the
        // repository), so a fresh one costs nothing.
        chosen
            .config
            .reseal_maintenance(&crate::crypto::MaintenanceSecret::generate())?;
    }
    chosen.config.seal(&chosen.chunk_key, Some(identity));
    let bytes = Bytes::from(chosen.config.to_bytes());
    store
        .put(config::KEY, bytes.clone(), PutMode::Overwrite)
        .await?;
    // Read back: a store that silently kept the old object must not look recovered.
    let back = store.get(config::KEY).await?;
    if sha256(&back) != sha256(&bytes) {
        return Err(Error::Store(
            "the rewritten config did not read back as written; check the store's versioning or locks".into(),
        ));
    }
    Ok(Recovered {
        id: chosen.config.id,
        source: chosen.source,
    })
}
