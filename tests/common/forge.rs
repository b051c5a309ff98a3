//! Forging snapshots the way a holder of the backup-only key can: with the library, the
//! repository and that key alone (valid blobs, any manifest).

use std::sync::Arc;

use drydock::crypto::KeyFile;
use drydock::harbor::config::{ConfigPart, ConfigRoot};
use drydock::ids::SnapshotId;
use drydock::repo::blob::BlobType;
use drydock::repo::snapshot::{Parts, Snapshot, Summary};
use drydock::repo::tree::{Node, NodeKind};
use drydock::repo::writer::BlobWriter;
use drydock::repo::Repository;
use drydock::store::{open, Location, S3Options};

use super::Repo;

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
        parts,
        summary: Summary::default(),
    }
}

/// Write a snapshot of host `attacker` whose configuration roots `build` makes.
pub fn forge(repo: &Repo, build: impl FnOnce(&BlobWriter) -> Vec<ConfigRoot> + Send + 'static) {
    forge_snapshots(repo, move |w| {
        let parts = Parts {
            config: Some(ConfigPart { roots: build(w) }),
            ..Default::default()
        };
        vec![manifest(chrono::Utc::now(), "attacker", parts)]
    });
}

/// Save the snapshots `build` makes (it may write blobs with the writer) into the local
/// repository `repo`, with its backup-only key; their ids.
pub fn forge_snapshots(
    repo: &Repo,
    build: impl FnOnce(&BlobWriter) -> Vec<Snapshot> + Send + 'static,
) -> Vec<SnapshotId> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let root = repo.local_root.clone().expect("a local repository");
    let key = KeyFile::load(&repo.backup_key).unwrap();
    rt.block_on(async move {
        let store = open(&Location::Local(root), &S3Options::default())
            .await
            .unwrap();
        let r = Arc::new(Repository::open(store, key).await.unwrap());
        let index = r.load_index().await.unwrap();
        let writer = Arc::new(BlobWriter::new(r.clone(), &index, 2).unwrap());
        let w = writer.clone();
        let snaps = tokio::task::spawn_blocking(move || build(&w))
            .await
            .unwrap();
        writer.finish().await.unwrap();
        let mut ids = Vec::new();
        for s in &snaps {
            ids.push(r.save_snapshot(s).await.unwrap());
        }
        ids
    })
}
