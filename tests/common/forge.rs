//! Forging snapshots the way a holder of the backup-only key can: with the library, the
//! repository and that key alone.

use std::sync::Arc;

use drydock::crypto::KeyFile;
use drydock::harbor::config::{ConfigPart, ConfigRoot};
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

/// Write a snapshot whose roots are built by `build` from a writer, with the backup-only key.
pub fn forge(repo: &Repo, build: impl FnOnce(&BlobWriter) -> Vec<ConfigRoot> + Send + 'static) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let root = repo.local_root.clone().unwrap();
    let key = KeyFile::load(&repo.backup_key).unwrap();
    rt.block_on(async move {
        let store = open(&Location::Local(root), &S3Options::default())
            .await
            .unwrap();
        let r = Arc::new(Repository::open(store, key).await.unwrap());
        let index = r.load_index().await.unwrap();
        let writer = Arc::new(BlobWriter::new(r.clone(), &index, 2).unwrap());
        let w = writer.clone();
        let roots = tokio::task::spawn_blocking(move || build(&w))
            .await
            .unwrap();
        writer.finish().await.unwrap();
        let snap = Snapshot {
            version: 1,
            time: chrono::Utc::now(),
            host: "attacker".into(),
            tags: Default::default(),
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

pub fn file_node(w: &BlobWriter, name: &str, data: &[u8]) -> Node {
    let mut n = node(name, NodeKind::File);
    n.content = vec![w.save(BlobType::Data, data).unwrap()];
    n.size = data.len() as u64;
    n
}
