//! Forging repository objects the way an attacker holding only the backup-only key can:
//! through the library's writer, or byte by byte from FORMAT.md (packs, index objects).

use std::sync::Arc;

use drydock::crypto::KeyFile;
use drydock::harbor::config::{ConfigPart, ConfigRoot};
use drydock::ids::{sha256, BlobId, IndexId};
use drydock::repo::blob::EncodedBlob;
use drydock::repo::pack::PackBuilder;
use drydock::repo::snapshot::{Parts, Snapshot, Summary};
use drydock::repo::tree::{Node, NodeKind};
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

/// The repository opened with the backup-only key alone.
pub async fn attacker(repo: &Repo) -> Arc<Repository> {
    let root = repo.local_root.clone().expect("a local repository");
    let key = KeyFile::load(&repo.backup_key).unwrap();
    let store = open(&Location::Local(root), &S3Options::default())
        .await
        .unwrap();
    Arc::new(Repository::open(store, key).await.unwrap())
}

/// Store hand-made blobs in one new pack and index it, bypassing every writer check.
pub async fn put_raw_blobs(r: &Repository, blobs: Vec<EncodedBlob>) {
    let mut builder = PackBuilder::default();
    for b in blobs {
        builder.add(b);
    }
    let p = builder.finish();
    r.store
        .put(&pack::key(&p.id), p.bytes, PutMode::CreateNew)
        .await
        .unwrap();
    let idx = index::encode(&[(p.id, p.entries)]);
    let id = IndexId(sha256(&idx));
    r.store
        .put(&index::key(&id), idx.into(), PutMode::CreateNew)
        .await
        .unwrap();
}

/// Write a configuration snapshot as `host` with `tags`. `raw` may hand-make blobs, stored
/// with [`put_raw_blobs`]; `build` makes the roots (blocking, with a writer and the ids of
/// the hand-made blobs).
pub fn forge(
    repo: &Repo,
    host: &str,
    tags: &[(&str, &str)],
    raw: impl FnOnce(&Repository) -> Vec<EncodedBlob>,
    build: impl FnOnce(&BlobWriter, Vec<BlobId>) -> Vec<ConfigRoot> + Send + 'static,
) {
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
        let roots = tokio::task::spawn_blocking(move || build(&w, raw_ids))
            .await
            .unwrap();
        writer.finish().await.unwrap();
        let snap = Snapshot {
            version: 1,
            time: chrono::Utc::now(),
            host: host.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            expires: None,
            program: "forged".into(),
            harbor_version: None,
            parts: Parts {
                config: Some(ConfigPart { roots }),
                ..Default::default()
            },
            summary: Summary::default(),
        };
        r.save_snapshot(&snap).await.unwrap();
    });
}
