//! Push planned repositories ([`super::project`]) into a running registry through its HTTP
//! API, as `docker push` would, so Harbor records the images itself and nothing in its
//! database is edited behind its back.
//!
//! Repository by repository: each blob is HEAD-checked, mounted from another repository
//! that holds it (one restored earlier in the run, or one the snapshot links it from), or
//! else uploaded, its content checked against its digest as it streams (a mismatch fails
//! the request before its end, so the registry never commits the blob; the registry checks
//! the digest too); then the manifests by digest, children of an index first; then the
//! tags. What the registry already has is skipped: a second run sends only HEADs.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use reqwest::StatusCode;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use url::Url;

use super::project::{project_of, RepoPlan, Source};
use super::restore::{load_entry, Progress};
use super::Digest;
use crate::error::{Error, Result};
use crate::oci::{Head, RegistryClient, Upload};
use crate::repo::blob::BlobType;
use crate::repo::reader::BlobReader;

/// What one repository's restore found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepoReport {
    pub repository: String,
    pub tags: usize,
    pub manifests: usize,
    pub blobs: usize,
    pub bytes: u64,
    pub tags_pushed: usize,
    pub manifests_pushed: usize,
    pub blobs_uploaded: usize,
    pub blobs_mounted: usize,
    pub bytes_uploaded: u64,
    /// Tags the registry has on another manifest now: left alone unless forced.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags_left: Vec<String>,
}

impl RepoReport {
    /// The counts of a plan, nothing pushed yet.
    pub fn of(plan: &RepoPlan) -> Self {
        RepoReport {
            repository: plan.name.clone(),
            tags: plan.tags.len(),
            manifests: plan.images.len(),
            blobs: plan.blobs.len(),
            bytes: plan.bytes(),
            ..Default::default()
        }
    }
}

/// How a blob got into the repository.
enum Got {
    Present,
    Mounted,
    Uploaded(u64),
}

/// Pushes the plans of one run, in order.
pub struct Pusher<'a> {
    pub client: &'a RegistryClient,
    pub source: &'a Source<'a>,
    /// Repositories of the snapshot that link each blob (mount sources).
    pub holders: HashMap<&'a Digest, Vec<&'a str>>,
    /// The repositories this run restores: not mount sources until pushed.
    pub restoring: HashSet<String>,
    /// Move a tag the registry has on another manifest now.
    pub force: bool,
    pub parallel: usize,
    pub progress: Progress,
    /// Blobs in the registry by now, and a repository that holds each.
    pushed: Mutex<HashMap<Digest, String>>,
}

impl<'a> Pusher<'a> {
    pub fn new(
        client: &'a RegistryClient,
        source: &'a Source<'a>,
        holders: HashMap<&'a Digest, Vec<&'a str>>,
        restoring: HashSet<String>,
        parallel: usize,
        progress: Progress,
    ) -> Self {
        Pusher {
            client,
            source,
            holders,
            restoring,
            force: false,
            parallel,
            progress,
            pushed: Mutex::new(HashMap::new()),
        }
    }

    pub async fn push(&self, plan: &RepoPlan) -> Result<RepoReport> {
        let mut report = RepoReport::of(plan);
        let repo = plan.name.as_str();
        let mut seen: HashSet<&Digest> = HashSet::new();
        for image in &plan.images {
            let new: Vec<&Digest> = image.blobs.iter().filter(|b| seen.insert(*b)).collect();
            let got: Vec<Got> = stream::iter(new)
                .map(|b| self.blob(repo, b))
                .buffer_unordered(self.parallel.max(1))
                .try_collect()
                .await?;
            for g in got {
                match g {
                    Got::Present => {}
                    Got::Mounted => report.blobs_mounted += 1,
                    Got::Uploaded(n) => {
                        report.blobs_uploaded += 1;
                        report.bytes_uploaded += n;
                    }
                }
            }
            let head = self
                .client
                .head_manifest(repo, image.digest.as_str())
                .await?;
            if !exists(&head, repo, image.digest.as_str())? {
                self.client
                    .put_manifest(repo, image.digest.as_str(), &image.manifest)
                    .await?;
                report.manifests_pushed += 1;
            }
        }
        for (tag, digest) in &plan.tags {
            let head = self.client.head_manifest(repo, tag).await?;
            if exists(&head, repo, tag)? {
                match head.digest.as_deref() {
                    Some(d) if d == digest.as_str() => continue,
                    other if !self.force => {
                        report.tags_left.push(format!(
                            "{repo}:{tag} is on {} now, the snapshot has {digest}; left alone (--force moves it)",
                            crate::term::esc(other.unwrap_or("another manifest"))
                        ));
                        continue;
                    }
                    _ => {}
                }
            }
            let image = plan
                .image(digest)
                .expect("a plan holds the images of its tags");
            self.client.put_manifest(repo, tag, &image.manifest).await?;
            report.tags_pushed += 1;
        }
        Ok(report)
    }

    async fn blob(&self, repo: &str, digest: &Digest) -> Result<Got> {
        let head = self.client.head_blob(repo, digest.as_str()).await?;
        let got = if exists(&head, repo, digest.as_str())? {
            Got::Present
        } else {
            let from = self.mount_source(repo, digest);
            match self
                .client
                .start_upload(repo, digest.as_str(), from.as_deref())
                .await?
            {
                Upload::Mounted => Got::Mounted,
                Upload::Started(location) => {
                    Got::Uploaded(self.upload(repo, location, digest).await?)
                }
            }
        };
        self.pushed
            .lock()
            .expect("pushed lock")
            .insert(digest.clone(), repo.to_string());
        Ok(got)
    }

    /// Where the registry may hold `digest` already: a repository this run pushed it to,
    /// else one the snapshot links it from (same project first) that this run does not
    /// restore, so is likely still there.
    fn mount_source(&self, repo: &str, digest: &Digest) -> Option<String> {
        if let Some(r) = self.pushed.lock().expect("pushed lock").get(digest) {
            return Some(r.clone());
        }
        let holders = self.holders.get(digest)?;
        let live = |h: &&&str| **h != repo && !self.restoring.contains(**h);
        let same_project = holders
            .iter()
            .filter(live)
            .find(|h| project_of(h) == project_of(repo));
        same_project
            .or_else(|| holders.iter().find(live))
            .map(|h| h.to_string())
    }

    /// Send a blob's content to an upload session, checked as it streams.
    async fn upload(&self, repo: &str, location: Url, digest: &Digest) -> Result<u64> {
        let node = self.source.node(digest, "blob")?;
        let (_, entry) = load_entry(self.source.reader, node).await?;
        let failure: Arc<Mutex<Option<Error>>> = Arc::default();
        let body = || {
            reqwest::Body::wrap_stream(content(
                self.source.reader.clone(),
                entry.content.clone(),
                entry.size,
                digest.clone(),
                failure.clone(),
                self.progress.clone(),
            ))
        };
        self.client
            .finish_upload(repo, location, digest.as_str(), body)
            .await
            // The stream's own error (the snapshot's bytes are not the blob's) says more
            // than the aborted request.
            .map_err(|e| failure.lock().expect("failure lock").take().unwrap_or(e))?;
        Ok(entry.size)
    }
}

/// Whether a HEAD found the thing; any answer but found or not found is an error.
fn exists(head: &Head, repo: &str, reference: &str) -> Result<bool> {
    match head.status {
        s if s.is_success() => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        s => Err(Error::Other(format!(
            "the registry answered HTTP {} to HEAD {repo}@{reference}",
            s.as_u16()
        ))),
    }
}

/// A blob's content from the snapshot, as a body: the chunks in order, then a check of
/// length and digest whose failure ends the stream with an error.
fn content(
    reader: BlobReader,
    chunks: Vec<crate::ids::BlobId>,
    size: u64,
    digest: Digest,
    failure: Arc<Mutex<Option<Error>>>,
    progress: Progress,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let left = Arc::new(AtomicU64::new(size));
    let (h, l) = (hasher.clone(), left.clone());
    let data = stream::iter(chunks)
        .map(move |id| {
            let reader = reader.clone();
            async move { reader.load(&id, BlobType::Data).await }
        })
        .buffered(2)
        .map_ok(move |mut chunk| {
            // A small blob is stored padded: only its recorded length is content.
            let keep = l.load(Ordering::Relaxed).min(chunk.len() as u64);
            chunk.truncate(keep as usize);
            l.fetch_sub(keep, Ordering::Relaxed);
            h.lock().expect("hasher lock").update(&chunk);
            progress.bytes(keep);
            Bytes::from(chunk)
        });
    let check = stream::once(async move {
        let actual = hex::encode(hasher.lock().expect("hasher lock").clone().finalize());
        match actual == digest.hex() && left.load(Ordering::Relaxed) == 0 {
            true => Ok(Bytes::new()),
            false => Err(Error::Integrity(format!(
                "the snapshot's bytes of blob {digest} do not match its digest; not pushed"
            ))),
        }
    });
    // The error itself is kept for the caller; the HTTP layer gets its words only.
    data.chain(check).map_err(move |e| {
        let words = std::io::Error::other(e.to_string());
        failure.lock().expect("failure lock").get_or_insert(e);
        words
    })
}
