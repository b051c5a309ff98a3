//! Forging repository objects the way an attacker holding only the backup-only key can:
//! through the library's writer (valid blobs, any manifest), or byte by byte from
//! FORMAT.md (packs, index objects).

use std::sync::Arc;

use drydock::crypto::KeyFile;
use drydock::harbor::config::{ConfigPart, ConfigRoot};
use drydock::ids::{sha256, BlobId, IndexId, SnapshotId};
use drydock::repo::auth::Authenticator;
use drydock::repo::blob::{BlobType, EncodedBlob};
use drydock::repo::pack::PackBuilder;
use drydock::repo::snapshot::{Parts, Snapshot, Summary};
use drydock::repo::tree::{Node, NodeKind, Tree};
use drydock::repo::writer::BlobWriter;
use drydock::repo::{index, pack, Repository};
use drydock::store::{open, Location, PutMode, S3Options};

use crate::common::Repo;

/// A node with mode 0755 and nothing attached.
pub fn node(name: &str, kind: NodeKind) -> Node {
    Node {
        mode: 0o755,
        ..Node::new(name, kind)
    }
}

pub fn file_node(w: &BlobWriter, name: &str, data: &[u8]) -> Node {
    let mut n = node(name, NodeKind::File);
    n.content = vec![w.save(BlobType::Data, data).unwrap()];
    n.size = data.len() as u64;
    n
}

/// A directory node whose tree, saved with `w`, holds `children`.
pub fn dir_node(w: &BlobWriter, name: &str, children: Vec<Node>) -> Node {
    let mut n = node(name, NodeKind::Dir);
    n.subtree = Some(
        w.save(BlobType::Tree, &Tree { nodes: children }.to_bytes())
            .unwrap(),
    );
    n
}

/// A configuration root at `path`.
pub fn root(path: &str, node: Node) -> ConfigRoot {
    ConfigRoot {
        path: path.into(),
        node,
    }
}

/// A manifest with nothing in it but what the caller sets.
pub fn manifest(time: chrono::DateTime<chrono::Utc>, host: &str, parts: Parts) -> Snapshot {
    Snapshot {
        version: 1,
        time,
        host: host.into(),
        tags: Default::default(),
        expires: None,
        program: "forged".into(),
        harbor_version: None,
        quiesced: None,
        parts,
        summary: Summary::default(),
    }
}

/// The repository opened with the backup-only key alone.
pub async fn attacker(repo: &Repo) -> Arc<Repository> {
    let root = repo.local_root.clone().expect("a local repository");
    let key = KeyFile::load(&repo.backup_key).unwrap();
    let store = open(&Location::Local(root), &S3Options::default())
        .await
        .unwrap();
    Arc::new(Repository::open(store, key).await.unwrap())
}

/// What tags index, pack and snapshot objects, as the backup-only key holds it.
pub fn attacker_auth(repo: &Repo) -> Authenticator {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { attacker(repo).await.keys.objects.clone() })
}

/// Store hand-made blobs in one new pack and index it, bypassing every writer check.
pub async fn put_raw_blobs(r: &Repository, blobs: Vec<EncodedBlob>) {
    let mut builder = PackBuilder::default();
    for b in blobs {
        builder.add(b);
    }
    let p = builder.finish(&r.keys.objects);
    r.store
        .put(&pack::key(&p.id), p.bytes, PutMode::CreateNew)
        .await
        .unwrap();
    let idx = index::encode(&[(p.id, p.entries)], &r.keys.objects);
    let id = IndexId(sha256(&idx));
    r.store
        .put(&index::key(&id), idx.into(), PutMode::CreateNew)
        .await
        .unwrap();
}

/// Save the snapshots `build` makes into the local repository `repo`, with its backup-only
/// key; their ids. `raw` may hand-make blobs first (stored with [`put_raw_blobs`]); `build`
/// runs blocking, with a writer and the ids of the hand-made blobs.
pub fn forge_raw(
    repo: &Repo,
    raw: impl FnOnce(&Repository) -> Vec<EncodedBlob>,
    build: impl FnOnce(&BlobWriter, Vec<BlobId>) -> Vec<Snapshot> + Send + 'static,
) -> Vec<SnapshotId> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let r = attacker(repo).await;
        let blobs = raw(&r);
        let raw_ids: Vec<BlobId> = blobs.iter().map(|b| b.id).collect();
        if !blobs.is_empty() {
            put_raw_blobs(&r, blobs).await;
        }
        let index = r.load_index().await.unwrap();
        let writer = Arc::new(BlobWriter::new(r.clone(), &index, 2).unwrap());
        let w = writer.clone();
        let snaps = tokio::task::spawn_blocking(move || build(&w, raw_ids))
            .await
            .unwrap();
        writer.finish().await.unwrap();
        let mut ids = Vec::new();
        for s in &snaps {
            ids.push(
                r.save_snapshot(s, Some(&writer.references()))
                    .await
                    .unwrap(),
            );
        }
        ids
    })
}

/// [`forge_raw`] without hand-made blobs.
pub fn forge_snapshots(
    repo: &Repo,
    build: impl FnOnce(&BlobWriter) -> Vec<Snapshot> + Send + 'static,
) -> Vec<SnapshotId> {
    forge_raw(repo, |_| Vec::new(), move |w, _| build(w))
}

/// Write a configuration snapshot of host `attacker` whose roots `build` makes.
pub fn forge(repo: &Repo, build: impl FnOnce(&BlobWriter) -> Vec<ConfigRoot> + Send + 'static) {
    forge_with(repo, "attacker", &[], |_| Vec::new(), move |w, _| build(w));
}

/// Write a configuration snapshot as `host` with `tags`; see [`forge_raw`] for `raw`.
pub fn forge_with(
    repo: &Repo,
    host: &str,
    tags: &[(&str, &str)],
    raw: impl FnOnce(&Repository) -> Vec<EncodedBlob>,
    build: impl FnOnce(&BlobWriter, Vec<BlobId>) -> Vec<ConfigRoot> + Send + 'static,
) {
    let host = host.to_string();
    let tags: std::collections::BTreeMap<String, String> = tags
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    forge_raw(repo, raw, move |w, ids| {
        let parts = Parts {
            config: Some(ConfigPart {
                roots: build(w, ids),
            }),
            ..Default::default()
        };
        let mut snap = manifest(chrono::Utc::now(), &host, parts);
        snap.tags = tags.into_iter().collect();
        vec![snap]
    });
}
