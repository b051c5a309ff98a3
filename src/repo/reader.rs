//! Reading blobs back: locate in the index, fetch the byte range, decrypt, authenticate.

use std::sync::Arc;

use super::blob::{self, BlobType};
use super::index::MasterIndex;
use super::pack;
use super::tree::{RegistryEntry, Tree};
use super::Repository;
use crate::error::{Error, Result};
use crate::ids::BlobId;

#[derive(Clone)]
pub struct BlobReader {
    repo: Arc<Repository>,
    index: Arc<MasterIndex>,
}

impl BlobReader {
    /// Needs the identity; fails with a key error otherwise.
    pub fn new(repo: Arc<Repository>, index: Arc<MasterIndex>, operation: &str) -> Result<Self> {
        repo.keys.identity(operation)?;
        Ok(BlobReader { repo, index })
    }

    pub async fn load(&self, id: &BlobId, expected: BlobType) -> Result<Vec<u8>> {
        let loc = self.index.get(id).ok_or_else(|| {
            Error::Integrity(format!(
                "blob {} is not in the index (its pack or index object is missing)",
                id.short()
            ))
        })?;
        if loc.blob_type != expected {
            return Err(Error::Integrity(format!(
                "blob {} has type {:?}, expected {expected:?}",
                id.short(),
                loc.blob_type
            )));
        }
        let bytes = self
            .repo
            .store
            .get_range(&pack::key(&loc.pack), loc.offset as u64, loc.length as u64)
            .await
            .map_err(|e| match e {
                Error::NotFound(_) => {
                    Error::Integrity(format!("pack {} is missing", loc.pack.short()))
                }
                other => other,
            })?;
        if bytes.len() != loc.length as usize {
            return Err(Error::Integrity(format!(
                "pack {} is truncated (blob {} cut short)",
                loc.pack.short(),
                id.short()
            )));
        }
        let repo = self.repo.clone();
        let id = *id;
        tokio::task::spawn_blocking(move || {
            let identity = repo.keys.identity("reading data")?;
            blob::decode(
                identity,
                &repo.keys.chunk_key,
                expected,
                &id,
                loc.raw_length,
                &bytes,
            )
            .map_err(|e| match e {
                Error::Integrity(m) => Error::Integrity(format!("{m} (pack {})", loc.pack.short())),
                other => other,
            })
        })
        .await
        .map_err(|e| Error::Other(format!("decode task failed: {e}")))?
    }

    pub async fn load_registry(&self, id: &BlobId) -> Result<RegistryEntry> {
        let bytes = self.load(id, BlobType::Registry).await?;
        RegistryEntry::parse(&bytes).map_err(|e| {
            Error::Integrity(format!("registry blob {} is malformed: {e}", id.short()))
        })
    }

    /// The blobs a tree or registry blob names, with their types.
    pub async fn children(
        &self,
        id: &BlobId,
        blob_type: BlobType,
    ) -> Result<Vec<(BlobId, BlobType)>> {
        Ok(match blob_type {
            BlobType::Tree => self
                .load_tree(id)
                .await?
                .referenced_blobs()
                .map(|(b, t)| (*b, t))
                .collect(),
            BlobType::Registry => self
                .load_registry(id)
                .await?
                .content
                .into_iter()
                .map(|b| (b, BlobType::Data))
                .collect(),
            BlobType::Data => Vec::new(),
        })
    }

    pub async fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        let bytes = self.load(id, BlobType::Tree).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Integrity(format!("tree {} is malformed: {e}", id.short())))
    }
}
