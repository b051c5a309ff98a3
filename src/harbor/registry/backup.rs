//! Registry backup: links, then blobs; known digests are skipped unread.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use sha2::{Digest as _, Sha256};

use super::{count, format_links, Digest, Link, RegistryPart, BLOBS, REPOSITORIES};
use crate::error::{Error, Result};
use crate::ids::BlobId;
use crate::repo::blob::BlobType;
use crate::repo::tree::{Node, NodeKind, RegistryEntry, Tree};
use crate::repo::writer::{BlobWriter, OnBytes};
use crate::store::Store;

pub type Progress = Arc<dyn OnBytes + Send + Sync>;

pub struct RegistryBackup {
    pub part: RegistryPart,
    /// Blobs that could not be stored (digest mismatch, vanished): the snapshot is partial.
    pub warnings: Vec<String>,
    /// Every digest the snapshot holds.
    pub digests: HashSet<Digest>,
    /// Blob bytes read from the registry (0 for an unchanged registry).
    pub bytes_read: u64,
    pub blobs_new: u64,
    pub blobs_known: u64,
}

/// Hashes and counts what passes through.
struct Sha256Reader<R> {
    inner: R,
    hash: Sha256,
    len: u64,
}

impl<R: Read> Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

fn blob_node(digest: &Digest, size: u64, registry: BlobId) -> Node {
    Node {
        mode: 0o644,
        size,
        registry: Some(registry),
        ..Node::new(digest.as_str(), NodeKind::File)
    }
}

async fn save_blocking(
    writer: &Arc<BlobWriter>,
    blob_type: BlobType,
    data: Vec<u8>,
) -> Result<BlobId> {
    let w = writer.clone();
    tokio::task::spawn_blocking(move || w.save(blob_type, &data))
        .await
        .map_err(|e| Error::Other(format!("save task failed: {e}")))?
}

/// Read every link under repositories/ (not _uploads/).
async fn read_links(
    source: &Arc<dyn Store>,
    parallel: usize,
    warnings: &mut Vec<String>,
) -> Result<Vec<Link>> {
    let keys: Vec<String> = source
        .list(REPOSITORIES)
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| !k.contains("/_uploads/") && k.ends_with("/link"))
        .collect();
    let results: Vec<(String, Result<bytes::Bytes>)> = stream::iter(keys)
        .map(|k| async move {
            let r = source.get(&k).await;
            (k, r)
        })
        .buffer_unordered(parallel.max(1) * 4)
        .collect()
        .await;
    let mut links = Vec::with_capacity(results.len());
    for (key, r) in results {
        let bytes = match r {
            Ok(b) => b,
            Err(Error::NotFound(_)) => continue, // removed since listing (a tag deleted)
            Err(e) => return Err(e),
        };
        let path = key[REPOSITORIES.len()..].to_string();
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        match (Digest::parse(&text), super::safe_link_path(&path)) {
            (Ok(digest), true) => links.push(Link { path, digest }),
            _ => warnings.push(format!("{key}: not a valid link ({text:?}); skipped")),
        }
    }
    links.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(links)
}

enum Outcome {
    Known(Node),
    New(Node, u64),
    Bad(String),
}

/// Store one blob unless its digest is known; check its sha256 while reading.
async fn backup_blob(
    source: &Arc<dyn Store>,
    writer: &Arc<BlobWriter>,
    digest: Digest,
    size: u64,
    progress: &Progress,
) -> Result<Outcome> {
    if let Some(known) = writer.known_registry(digest.as_str()) {
        return Ok(Outcome::Known(blob_node(&digest, size, known)));
    }
    let key = digest.data_key();
    let reader = match source.open_read(&key).await {
        Ok(r) => r,
        Err(Error::NotFound(_)) => {
            return Ok(Outcome::Bad(format!(
                "{digest}: vanished while backing up ({key})"
            )))
        }
        Err(e) => return Err(e),
    };
    let (w, p) = (writer.clone(), progress.clone());
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let (content, len, actual) = tokio::task::spawn_blocking(move || {
        let mut hashing = Sha256Reader {
            inner: bridge,
            hash: Sha256::new(),
            len: 0,
        };
        let (content, len) = w.save_stream(&mut hashing, &*p)?;
        Ok::<_, Error>((content, len, hex::encode(hashing.hash.finalize())))
    })
    .await
    .map_err(|e| Error::Other(format!("blob task failed: {e}")))??;
    if actual != digest.hex() {
        return Ok(Outcome::Bad(format!(
            "{digest}: content does not match its digest (sha256 is {actual}) at {key}; not stored"
        )));
    }
    let entry = RegistryEntry {
        digest: digest.as_str().to_string(),
        size: len,
        content,
    };
    let w = writer.clone();
    let id = tokio::task::spawn_blocking(move || w.save_registry(&entry.digest, &entry.to_bytes()))
        .await
        .map_err(|e| Error::Other(format!("save task failed: {e}")))??;
    Ok(Outcome::New(blob_node(&digest, len, id), len))
}

/// Group digest nodes by their first two hex digits into one tree each, under a root tree.
async fn save_blob_tree(writer: &Arc<BlobWriter>, nodes: Vec<Node>) -> Result<BlobId> {
    let mut groups: BTreeMap<String, Vec<Node>> = BTreeMap::new();
    for n in nodes {
        groups.entry(n.name[7..9].to_string()).or_default().push(n);
    }
    let mut root = Tree::default();
    for (prefix, mut nodes) in groups {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let id = save_blocking(writer, BlobType::Tree, Tree { nodes }.to_bytes()).await?;
        root.nodes.push(Node {
            mode: 0o755,
            subtree: Some(id),
            ..Node::new(prefix, NodeKind::Dir)
        });
    }
    save_blocking(writer, BlobType::Tree, root.to_bytes()).await
}

pub async fn backup(
    source: Arc<dyn Store>,
    driver: &str,
    root: &str,
    writer: Arc<BlobWriter>,
    parallel: usize,
    progress: Progress,
) -> Result<RegistryBackup> {
    let mut warnings = Vec::new();
    // repositories/ first: every blob a link names is then in the blob listing below,
    // unless garbage collection removes it in between (Harbor's read-only mode stops that).
    let links = read_links(&source, parallel, &mut warnings).await?;
    let (repositories, tags) = count(&links);
    let text = format_links(&links);
    let links_size = text.len() as u64;
    let (w, p) = (writer.clone(), progress.clone());
    let (link_chunks, _) =
        tokio::task::spawn_blocking(move || w.save_stream(std::io::Cursor::new(text), &*p))
            .await
            .map_err(|e| Error::Other(format!("saving links failed: {e}")))??;

    let mut listed: Vec<(Digest, u64)> = source
        .list(BLOBS)
        .await?
        .into_iter()
        .filter_map(|o| Digest::from_data_key(&o.key).map(|d| (d, o.size)))
        .collect();
    listed.sort();
    let bytes_read = AtomicU64::new(0);
    let outcomes: Vec<Result<Outcome>> = stream::iter(listed)
        .map(|(d, size)| backup_blob(&source, &writer, d, size, &progress))
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let (mut nodes, mut digests) = (Vec::new(), HashSet::new());
    let (mut blobs_new, mut blobs_known, mut blob_bytes) = (0, 0, 0);
    for o in outcomes {
        match o? {
            Outcome::Known(n) => {
                blobs_known += 1;
                blob_bytes += n.size;
                digests.insert(Digest::parse(&n.name)?);
                nodes.push(n);
            }
            Outcome::New(n, read) => {
                blobs_new += 1;
                blob_bytes += n.size;
                bytes_read.fetch_add(read, Ordering::Relaxed);
                digests.insert(Digest::parse(&n.name)?);
                nodes.push(n);
            }
            Outcome::Bad(w) => {
                tracing::warn!("{w}");
                warnings.push(w);
            }
        }
    }
    for l in &links {
        if !digests.contains(&l.digest) {
            warnings.push(format!(
                "{}: links to {}, which the registry does not hold",
                l.key(),
                l.digest
            ));
        }
    }
    let blob_count = nodes.len() as u64;
    let blobs = save_blob_tree(&writer, nodes).await?;
    Ok(RegistryBackup {
        part: RegistryPart {
            driver: driver.to_string(),
            root: root.to_string(),
            links: link_chunks,
            links_size,
            link_count: links.len() as u64,
            blobs,
            blob_count,
            blob_bytes,
            repositories,
            tags,
        },
        warnings,
        digests,
        bytes_read: bytes_read.into_inner(),
        blobs_new,
        blobs_known,
    })
}
