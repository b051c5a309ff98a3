//! Registry restore: blobs first (skipping those already present and correct), then links,
//! so the registry never serves a link to a missing blob. Safe to re-run after an
//! interruption: finished blobs are skipped, unfinished ones were never visible.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

use super::{parse_links, Digest, Link, RegistryPart, BLOBS};
use crate::beneath::Root;
use crate::error::{Error, Result};
use crate::repo::blob::{BlobType, MAX_DATA_RAW};
use crate::repo::reader::BlobReader;
use crate::repo::restorer::{self, FileJob, Staged};
use crate::repo::tree::{Node, RegistryEntry};
use crate::repo::writer::OnBytes;
use crate::store::{PutMode, Store};

pub type Progress = Arc<dyn OnBytes + Send + Sync>;

#[derive(Debug, Default, Serialize)]
pub struct RegistryRestoreReport {
    pub blobs_written: u64,
    pub blobs_present: u64,
    pub bytes_written: u64,
    pub links_written: u64,
    /// With --dry-run: the digests that would be written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_write: Vec<String>,
}

/// Every digest node of the part, from its two-level tree.
pub async fn blob_nodes(reader: &BlobReader, part: &RegistryPart) -> Result<Vec<Node>> {
    let root = reader.load_tree(&part.blobs).await?;
    let subtrees: Vec<_> = root
        .nodes
        .iter()
        .map(|d| {
            d.subtree
                .ok_or_else(|| Error::Integrity("registry tree: a prefix without a subtree".into()))
        })
        .collect::<Result<_>>()?;
    let trees: Vec<_> = stream::iter(subtrees)
        .map(|id| async move { reader.load_tree(&id).await })
        .buffered(16)
        .try_collect()
        .await?;
    // Sized by what the trees hold, not by the manifest's (unauthenticated) count.
    let mut out = Vec::with_capacity(trees.iter().map(|t| t.nodes.len()).sum());
    for n in trees.into_iter().flat_map(|t| t.nodes) {
        Digest::parse(&n.name)?;
        if n.registry.is_none() {
            return Err(Error::Integrity(format!(
                "registry tree: {} names no registry blob",
                n.name
            )));
        }
        out.push(n);
    }
    Ok(out)
}

/// The link list of the part.
pub async fn links(reader: &BlobReader, part: &RegistryPart) -> Result<Vec<Link>> {
    // The manifest's size is a hint: reserve at most one chunk's worth up front.
    let mut text = Vec::with_capacity(part.links_size.min(MAX_DATA_RAW as u64) as usize);
    let mut chunks = std::pin::pin!(reader.load_stream(&part.links, BlobType::Data, 4));
    while let Some(chunk) = chunks.next().await {
        text.extend(chunk?);
    }
    parse_links(&text)
}

/// Whether the target holds this blob already, complete and correct.
async fn is_present(target: &dyn Store, node: &Node, size: Option<u64>) -> Result<bool> {
    if size != Some(node.size) {
        return Ok(false);
    }
    let digest = Digest::parse(&node.name)?;
    Ok(hash_object(target, &digest.data_key()).await?.as_deref() == Some(digest.hex()))
}

/// SHA-256 of a stored object, if it exists.
pub async fn hash_object(store: &dyn Store, key: &str) -> Result<Option<String>> {
    let mut r = match store.open_read(key).await {
        Ok(r) => r,
        Err(Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r
            .read(&mut buf)
            .await
            .map_err(|e| Error::io(format!("cannot read {key}"), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Some(hex::encode(h.finalize())))
}

/// The chunk list of a digest node, checked against the node.
pub(super) async fn load_entry(
    reader: &BlobReader,
    node: &Node,
) -> Result<(Digest, RegistryEntry)> {
    let digest = Digest::parse(&node.name)?;
    let entry = reader
        .load_registry(node.registry.as_ref().expect("checked"))
        .await?;
    if entry.digest != digest.as_str() || entry.size != node.size {
        return Err(Error::Integrity(format!(
            "the registry blob for {digest} describes {} ({} bytes)",
            entry.digest, entry.size
        )));
    }
    Ok((digest, entry))
}

/// Write blobs into a target that is a local directory: all together, pack by pack
/// ([`restorer`]), beneath the target (a symlink planted in it is refused, never followed);
/// each is checked against its digest before it is moved into place.
async fn write_local(
    reader: &BlobReader,
    root: &Root,
    nodes: &[&Node],
    parallel: usize,
    progress: &Progress,
) -> Result<u64> {
    let entries: Vec<(Digest, RegistryEntry)> = stream::iter(nodes)
        .map(|n| load_entry(reader, n))
        .buffered(16)
        .try_collect()
        .await?;
    let mut jobs = Vec::with_capacity(entries.len());
    for (digest, entry) in &entries {
        let path = PathBuf::from(digest.data_key());
        root.create_dirs(path.parent().expect("a data key has a directory"))?;
        jobs.push(FileJob {
            path,
            content: &entry.content,
            size: entry.size,
        });
    }
    let done = |i: usize, mut staged: Staged<'_>| -> Result<()> {
        let digest = &entries[i].0;
        if sha256_file(&mut staged.file, &root.shown(&jobs[i].path))? != digest.hex() {
            return Err(Error::Integrity(format!(
                "restored bytes of {digest} do not match the digest"
            )));
        }
        // Readable by the registry, whoever it runs as (the temporary file is 0600).
        staged
            .file
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| {
                Error::io(
                    format!("cannot set the mode of {}", jobs[i].path.display()),
                    e,
                )
            })?;
        staged.commit()
    };
    restorer::restore_files(reader, root, &jobs, parallel, &**progress, done).await?;
    Ok(entries.iter().map(|(_, e)| e.size).sum())
}

/// Write the links into a local directory, beneath it like the blobs.
async fn write_links_local(root: &Arc<Root>, links: &[Link], parallel: usize) -> Result<u64> {
    let written: Vec<()> = stream::iter(links.iter())
        .map(|l| {
            let (root, rel, digest) = (root.clone(), PathBuf::from(l.key()), l.digest.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                    let dir = root.create_dirs(rel.parent().unwrap_or(Path::new("")))?;
                    dir.remove_leftover_temps(&Default::default())?;
                    dir.write_atomic(name, digest.as_str().as_bytes())
                })
                .await
                .map_err(|e| Error::Other(format!("link writer failed: {e}")))?
            }
        })
        .buffer_unordered(parallel.max(1) * 4)
        .try_collect()
        .await?;
    Ok(written.len() as u64)
}

fn sha256_file(file: &mut std::fs::File, shown: &Path) -> Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(file, &mut buf)
            .map_err(|e| Error::io(format!("cannot read {}", shown.display()), e))?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

async fn write_blob(
    reader: &BlobReader,
    target: &Arc<dyn Store>,
    node: &Node,
    parallel: usize,
    progress: &Progress,
) -> Result<u64> {
    let (digest, entry) = load_entry(reader, node).await?;
    let hasher = Arc::new(std::sync::Mutex::new(Sha256::new()));
    let written = Arc::new(AtomicU64::new(0));
    let (h, w, p) = (hasher.clone(), written.clone(), progress.clone());
    let expected = digest.hex().to_string();
    let size = entry.size;
    let content = entry.content;
    let chunks = reader
        .load_stream(&content, BlobType::Data, parallel)
        .map_ok(move |data| {
            h.lock().expect("lock").update(&data);
            w.fetch_add(data.len() as u64, Ordering::Relaxed);
            p.bytes(data.len() as u64);
            Bytes::from(data)
        });
    // The last item checks the digest: a mismatch fails the stream, so the object is never
    // made visible under its name.
    let check = {
        let (hasher, written, digest) = (hasher.clone(), written.clone(), digest.clone());
        stream::once(async move {
            let actual = hex::encode(hasher.lock().expect("lock").clone().finalize());
            if actual != expected || written.load(Ordering::Relaxed) != size {
                Err(Error::Integrity(format!(
                    "restored bytes of {digest} do not match the digest"
                )))
            } else {
                Ok(Bytes::new())
            }
        })
    };
    target
        .put_stream(&digest.data_key(), chunks.chain(check).boxed())
        .await?;
    Ok(written.load(Ordering::Relaxed))
}

pub async fn restore(
    reader: &BlobReader,
    part: &RegistryPart,
    target: Arc<dyn Store>,
    parallel: usize,
    dry_run: bool,
    progress: Progress,
) -> Result<RegistryRestoreReport> {
    let nodes = blob_nodes(reader, part).await?;
    let links = links(reader, part).await?;
    let existing: HashMap<String, u64> = target
        .list(BLOBS)
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    progress.total(nodes.iter().map(|n| n.size).sum());
    let mut report = RegistryRestoreReport::default();
    // Blobs already there with the right content are kept (a re-run after an interruption).
    let present: Vec<bool> = stream::iter(nodes.iter())
        .map(|node| {
            let size = Digest::parse(&node.name)
                .ok()
                .and_then(|d| existing.get(&d.data_key()).copied());
            is_present(target.as_ref(), node, size)
        })
        .buffered(parallel.max(1))
        .try_collect()
        .await?;
    let mut missing: Vec<&Node> = Vec::new();
    for (node, present) in nodes.iter().zip(present) {
        if present {
            report.blobs_present += 1;
            progress.bytes(node.size);
        } else if dry_run {
            report.would_write.push(node.name.clone());
        } else {
            missing.push(node);
        }
    }
    // A local target is written beneath its directory, held open (not in a dry run: that
    // would create it).
    let local = match target.local_path("") {
        Some(dir) if !dry_run => Some(Arc::new(Root::create(&dir)?)),
        _ => None,
    };
    if let Some(root) = &local {
        report.bytes_written = write_local(reader, root, &missing, parallel, &progress).await?;
    } else {
        let written: Vec<u64> = stream::iter(missing.iter())
            .map(|node| write_blob(reader, &target, node, parallel, &progress))
            .buffer_unordered(parallel.max(1))
            .try_collect()
            .await?;
        report.bytes_written = written.iter().sum();
    }
    report.blobs_written = missing.len() as u64;
    report.would_write.sort();
    if dry_run {
        return Ok(report);
    }
    if let Some(root) = &local {
        report.links_written = write_links_local(root, &links, parallel).await?;
        return Ok(report);
    }
    let written: Vec<()> = stream::iter(links.iter())
        .map(|l| {
            let target = &target;
            async move {
                target
                    .put(
                        &l.key(),
                        Bytes::from(l.digest.as_str().to_string()),
                        PutMode::Overwrite,
                    )
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(parallel.max(1) * 4)
        .try_collect()
        .await?;
    report.links_written = written.len() as u64;
    Ok(report)
}
