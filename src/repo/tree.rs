//! Trees: one directory's entries, stored as a JSON blob of type [`BlobType::Tree`].
//!
//! A directory names its child tree by blob id, so an unchanged directory deduplicates
//! to the same tree blob and costs nothing in the next snapshot.
//!
//! [`BlobType::Tree`]: super::blob::BlobType::Tree

use serde::{Deserialize, Serialize};

use super::blob::BlobType;
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
    /// A registry blob: its [`BlobType::Registry`] blob, which lists the chunks.
    ///
    /// [`BlobType::Registry`]: super::blob::BlobType::Registry
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<BlobId>,
}

impl Node {
    /// A node with no metadata (mode 0, mtime 0, owner 0) and nothing attached.
    pub fn new(name: impl Into<String>, kind: NodeKind) -> Self {
        Node {
            name: name.into(),
            kind,
            mode: 0,
            mtime: 0,
            mtime_nsec: 0,
            uid: 0,
            gid: 0,
            size: 0,
            content: Vec::new(),
            subtree: None,
            target: None,
            registry: None,
        }
    }
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

    /// Parse the plaintext of a tree blob (the inverse of [`Tree::to_bytes`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Every blob this tree names directly, with its type.
    pub fn referenced_blobs(&self) -> impl Iterator<Item = (&BlobId, BlobType)> {
        self.nodes.iter().flat_map(|n| {
            let content = n.content.iter().map(|c| (c, BlobType::Data));
            let sub = n.subtree.iter().map(|t| (t, BlobType::Tree));
            let reg = n.registry.iter().map(|r| (r, BlobType::Registry));
            content.chain(sub).chain(reg)
        })
    }
}

/// The plaintext of a [`BlobType::Registry`] blob: `<digest>\n` then compact JSON
/// `{"size":…,"content":[…]}`. Its id is computed over the digest line alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryEntry {
    pub digest: String,
    pub size: u64,
    pub content: Vec<BlobId>,
}

#[derive(Serialize, Deserialize)]
struct RegistryBody {
    size: u64,
    content: Vec<BlobId>,
}

impl RegistryEntry {
    pub fn to_bytes(&self) -> Vec<u8> {
        let body = RegistryBody {
            size: self.size,
            content: self.content.clone(),
        };
        let mut out = format!("{}\n", self.digest).into_bytes();
        out.extend(serde_json::to_vec(&body).expect("serialisable"));
        out
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("no digest line")?;
        let digest = std::str::from_utf8(&bytes[..nl])
            .map_err(|e| e.to_string())?
            .to_string();
        let body: RegistryBody =
            serde_json::from_slice(&bytes[nl + 1..]).map_err(|e| e.to_string())?;
        Ok(RegistryEntry {
            digest,
            size: body.size,
            content: body.content,
        })
    }
}
