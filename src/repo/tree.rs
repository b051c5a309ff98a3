//! Trees: one directory's entries, stored as a JSON blob of type [`BlobType::Tree`].
//!
//! A directory names its child tree by blob id, so an unchanged directory deduplicates
//! to the same tree blob and costs nothing in the next snapshot.
//!
//! [`BlobType::Tree`]: super::blob::BlobType::Tree

use serde::{Deserialize, Serialize};

use crate::ids::BlobId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time: seconds since the epoch and nanoseconds.
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub uid: u32,
    pub gid: u32,
    /// File length in bytes (0 for others).
    #[serde(default)]
    pub size: u64,
    /// File content as blob ids in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<BlobId>,
    /// The tree blob of a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<BlobId>,
    /// A symlink's target, as stored in the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Sorted by name, so identical directories give identical bytes.
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("trees serialise")
    }

    /// Every blob this tree names directly (content and subtrees).
    pub fn referenced_blobs(&self) -> impl Iterator<Item = (&BlobId, bool)> {
        self.nodes.iter().flat_map(|n| {
            n.content
                .iter()
                .map(|c| (c, false))
                .chain(n.subtree.iter().map(|t| (t, true)))
        })
    }
}
