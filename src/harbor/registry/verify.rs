//! Compare a live registry with a snapshot: through its storage (missing, extra and corrupt
//! blobs, missing or different links) or through its HTTP API (tags, manifests, layers).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};

use super::restore::{blob_nodes, hash_object, links};
use super::{Digest, RegistryPart, BLOBS, REPOSITORIES};
use crate::error::Result;
use crate::oci::RegistryClient;
use crate::repo::reader::BlobReader;
use crate::store::Store;

/// Through the storage: every difference, one line each.
pub async fn verify_storage(
    reader: &BlobReader,
    part: &RegistryPart,
    target: Arc<dyn Store>,
    parallel: usize,
) -> Result<Vec<String>> {
    let nodes = blob_nodes(reader, part).await?;
    let links = links(reader, part).await?;
    let live: HashMap<String, u64> = target
        .list(BLOBS)
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let mut diffs = Vec::new();
    let wanted: HashSet<String> = nodes
        .iter()
        .filter_map(|n| Digest::parse(&n.name).ok().map(|d| d.data_key()))
        .collect();
    let checks: Vec<Result<Option<String>>> = stream::iter(nodes.iter())
        .map(|n| {
            let target = &target;
            let live = &live;
            async move {
                let d = Digest::parse(&n.name)?;
                let key = d.data_key();
                match live.get(&key) {
                    None => Ok(Some(format!("blob {d}: missing"))),
                    Some(&size) if size != n.size => Ok(Some(format!(
                        "blob {d}: {size} bytes, the snapshot has {}",
                        n.size
                    ))),
                    Some(_) => Ok(match hash_object(target.as_ref(), &key).await? {
                        Some(h) if h == d.hex() => None,
                        _ => Some(format!(
                            "blob {d}: corrupt (content does not match the digest)"
                        )),
                    }),
                }
            }
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    for c in checks {
        diffs.extend(c?);
    }
    let mut extra: Vec<&String> = live
        .keys()
        .filter(|k| k.ends_with("/data") && !wanted.contains(*k))
        .collect();
    extra.sort();
    diffs.extend(
        extra
            .into_iter()
            .map(|k| format!("blob {k}: not in the snapshot")),
    );

    let live_links: HashSet<String> = target
        .list(REPOSITORIES)
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with("/link") && !k.contains("/_uploads/"))
        .collect();
    let results: Vec<Result<Option<String>>> = stream::iter(links.iter())
        .map(|l| {
            let target = &target;
            let live_links = &live_links;
            async move {
                let what = l
                    .tag()
                    .map(|(r, t)| format!("tag {r}:{t}"))
                    .unwrap_or_else(|| format!("link {}", l.path));
                if !live_links.contains(&l.key()) {
                    return Ok(Some(format!("{what}: missing")));
                }
                let got = target.get(&l.key()).await?;
                let got = String::from_utf8_lossy(&got).trim().to_string();
                Ok((got != l.digest.as_str())
                    .then(|| format!("{what}: points to {got}, the snapshot to {}", l.digest)))
            }
        })
        .buffer_unordered(parallel.max(1) * 4)
        .collect()
        .await;
    for r in results {
        diffs.extend(r?);
    }
    let snapshot_links: HashSet<String> = links.iter().map(|l| l.key()).collect();
    let mut extra: Vec<&String> = live_links
        .iter()
        .filter(|k| !snapshot_links.contains(*k))
        .collect();
    extra.sort();
    diffs.extend(
        extra
            .into_iter()
            .map(|k| format!("link {}: not in the snapshot", &k[REPOSITORIES.len()..])),
    );
    Ok(diffs)
}

/// One thing to ask the registry for.
enum Probe {
    /// A manifest by tag (then its digest must be the snapshot's) or by digest.
    Manifest {
        repository: String,
        reference: String,
        expected: Option<String>,
    },
    Blob {
        repository: String,
        digest: String,
    },
}

impl Probe {
    /// A difference, if the registry's answer shows one.
    async fn run(&self, what: &str, client: &RegistryClient) -> Result<Option<String>> {
        let (head, expected) = match self {
            Probe::Manifest {
                repository,
                reference,
                expected,
            } => (client.head_manifest(repository, reference).await?, expected),
            Probe::Blob { repository, digest } => {
                (client.head_blob(repository, digest).await?, &None)
            }
        };
        if !head.status.is_success() {
            return Ok(Some(format!("{what}: HTTP {}", head.status.as_u16())));
        }
        Ok(match (expected, head.digest) {
            (Some(e), Some(g)) if *e != g => {
                Some(format!("{what}: serves {g}, the snapshot has {e}"))
            }
            _ => None,
        })
    }
}

/// Through the registry's HTTP API: every tag resolves to the snapshot's manifest, and
/// every manifest revision and layer the snapshot links is served.
pub async fn verify_http(
    reader: &BlobReader,
    part: &RegistryPart,
    client: &RegistryClient,
    parallel: usize,
) -> Result<Vec<String>> {
    let links = links(reader, part).await?;
    let mut probes: BTreeMap<String, Probe> = BTreeMap::new();
    for l in &links {
        let repository = l.repository().to_string();
        let digest = l.digest.to_string();
        if let Some((r, tag)) = l.tag() {
            probes.insert(
                format!("tag {r}:{tag}"),
                Probe::Manifest {
                    repository,
                    reference: tag.to_string(),
                    expected: Some(digest),
                },
            );
        } else if l.path.contains("/_manifests/revisions/") {
            probes.insert(
                format!("manifest {repository}@{digest}"),
                Probe::Manifest {
                    repository,
                    reference: digest,
                    expected: None,
                },
            );
        } else if l.path.contains("/_layers/") {
            probes.insert(
                format!("blob {repository}@{digest}"),
                Probe::Blob { repository, digest },
            );
        }
    }
    // The first error (credentials refused, registry unreachable) ends the run.
    let found: Vec<Option<String>> = stream::iter(probes.iter())
        .map(|(what, probe)| probe.run(what, client))
        .buffer_unordered(parallel.max(1) * 4)
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}
