//! The registry part: Harbor's CNCF distribution storage (`docker/registry/v2/…`) on a
//! filesystem or in S3.
//!
//! Blobs are content-addressed: a blob whose digest the repository already holds is
//! skipped without reading it, found by a keyed id of its digest that a backup-only key
//! can compute and the bucket cannot. A new blob is streamed through the chunker and its
//! sha256 checked as it is read. `repositories/` (layer links, manifest revisions, tags) is
//! kept as a sorted list of `path\tlink` lines; `_uploads/` is skipped.
//!
//! Restored into storage ([`restore`]), or one project at a time through a running
//! registry's API ([`project`] plans, [`push`] pushes).

pub mod backup;
pub mod project;
pub mod push;
pub mod restore;
pub mod verify;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::BlobId;

pub const V2: &str = "docker/registry/v2/";
pub const BLOBS: &str = "docker/registry/v2/blobs/";
pub const REPOSITORIES: &str = "docker/registry/v2/repositories/";

/// A `sha256:<64 hex>` digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Self> {
        match s.strip_prefix("sha256:") {
            Some(hex)
                if hex.len() == 64
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                Ok(Digest(s.to_string()))
            }
            _ => Err(Error::Integrity(format!("{s:?} is not a sha256 digest"))),
        }
    }

    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where the distribution layout keeps this blob's bytes.
    pub fn data_key(&self) -> String {
        format!("{BLOBS}sha256/{}/{}/data", &self.hex()[..2], self.hex())
    }

    /// The digest of a `blobs/sha256/xx/<hex>/data` key.
    pub fn from_data_key(key: &str) -> Option<Self> {
        let rest = key.strip_prefix(BLOBS)?.strip_prefix("sha256/")?;
        let mut parts = rest.split('/');
        let (prefix, hex, data) = (parts.next()?, parts.next()?, parts.next()?);
        if data != "data" || parts.next().is_some() || !hex.starts_with(prefix) {
            return None;
        }
        Digest::parse(&format!("sha256:{hex}")).ok()
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegistryPart {
    /// `filesystem` or `s3`, and the root it was read from.
    pub driver: String,
    pub root: String,
    /// Chunks of the link list: sorted lines `<path under repositories/>\t<digest>\n`.
    pub links: Vec<BlobId>,
    pub links_size: u64,
    pub link_count: u64,
    /// A tree of `xx` directories (the first two hex digits), each listing the digests
    /// starting with them as file nodes that name their registry blob.
    pub blobs: BlobId,
    pub blob_count: u64,
    pub blob_bytes: u64,
    pub repositories: u64,
    pub tags: u64,
}

/// One line of the link list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Path under `repositories/`, e.g. `library/nginx/_manifests/tags/1.25/current/link`.
    pub path: String,
    pub digest: Digest,
}

impl Link {
    pub fn key(&self) -> String {
        format!("{REPOSITORIES}{}", self.path)
    }

    /// `(repository, tag)` when this is a tag's current link.
    pub fn tag(&self) -> Option<(&str, &str)> {
        let (repo, rest) = self.path.split_once("/_manifests/tags/")?;
        let tag = rest.strip_suffix("/current/link")?;
        (!tag.contains('/')).then_some((repo, tag))
    }

    /// The repository a link belongs to.
    pub fn repository(&self) -> &str {
        ["/_manifests/", "/_layers/"]
            .iter()
            .find_map(|m| self.path.split_once(m).map(|(r, _)| r))
            .unwrap_or(&self.path)
    }
}

/// A path is safe to write under `repositories/`: relative, no `.`/`..`, printable.
fn safe_link_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.ends_with("/link")
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && p.chars().all(|c| c.is_ascii_graphic())
}

pub fn format_links(links: &[Link]) -> Vec<u8> {
    let mut out = Vec::with_capacity(links.len() * 140);
    for l in links {
        out.extend_from_slice(l.path.as_bytes());
        out.push(b'\t');
        out.extend_from_slice(l.digest.as_str().as_bytes());
        out.push(b'\n');
    }
    out
}

pub fn parse_links(text: &[u8]) -> Result<Vec<Link>> {
    let text = std::str::from_utf8(text)
        .map_err(|_| Error::Integrity("the link list is not UTF-8".into()))?;
    text.lines()
        .map(|line| {
            let (path, digest) = line
                .split_once('\t')
                .ok_or_else(|| Error::Integrity(format!("malformed link line {line:?}")))?;
            if !safe_link_path(path) {
                return Err(Error::Integrity(format!("unsafe link path {path:?}")));
            }
            Ok(Link {
                path: path.to_string(),
                digest: Digest::parse(digest)?,
            })
        })
        .collect()
}

/// Counts for the manifest: repositories and tags.
pub fn count(links: &[Link]) -> (u64, u64) {
    let repos: BTreeSet<&str> = links.iter().map(Link::repository).collect();
    let tags = links.iter().filter(|l| l.tag().is_some()).count();
    (repos.len() as u64, tags as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn digests_and_keys() {
        let d = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        assert_eq!(
            d.data_key(),
            format!("docker/registry/v2/blobs/sha256/01/{HEX}/data")
        );
        assert_eq!(Digest::from_data_key(&d.data_key()), Some(d));
        assert!(Digest::parse("sha256:XYZ").is_err());
        assert!(Digest::parse(&format!("md5:{HEX}")).is_err());
        assert!(
            Digest::from_data_key(&format!("docker/registry/v2/blobs/sha256/ff/{HEX}/data"))
                .is_none()
        );
    }

    #[test]
    fn links_round_trip_and_refuse_escapes() {
        let d = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        let links = vec![
            Link {
                path: "library/nginx/_manifests/tags/1.25/current/link".into(),
                digest: d.clone(),
            },
            Link {
                path: "proj/team/app/_layers/sha256/abc/link".into(),
                digest: d.clone(),
            },
        ];
        let parsed = parse_links(&format_links(&links)).unwrap();
        assert_eq!(parsed, links);
        assert_eq!(parsed[0].tag(), Some(("library/nginx", "1.25")));
        assert_eq!(parsed[1].repository(), "proj/team/app");
        assert_eq!(count(&parsed), (2, 1));
        for bad in [
            "../x/link",
            "/abs/link",
            "a/../b/link",
            "a b/link",
            "a/notalink",
        ] {
            assert!(
                parse_links(format!("{bad}\t{d}\n").as_bytes()).is_err(),
                "{bad}"
            );
        }
    }
}
