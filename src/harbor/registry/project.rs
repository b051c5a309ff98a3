//! One Harbor project or repository of a snapshot's registry part, planned for a push back
//! through the registry API ([`super::push`]).
//!
//! A Harbor repository is named `<project>/<rest>`: the project is the first component, as
//! in Harbor's own `distribution.ParseProjectName`. Every name and tag from the snapshot is
//! checked as the distribution spec allows them before it goes into a URL, and only
//! repositories whose first component is the named project are ever chosen, so a hostile
//! snapshot cannot steer a push elsewhere. The plan is made from the snapshot alone: each
//! manifest is read and checked against its digest, its children (an index's) and blobs
//! (config and layers) are listed, and anything the snapshot lacks stops the restore before
//! anything is sent.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use futures::StreamExt;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::restore::load_entry;
use super::{Digest, Link};
use crate::error::{Error, Result};
use crate::oci::{check_reference, check_repository, Manifest};
use crate::repo::blob::BlobType;
use crate::repo::reader::BlobReader;
use crate::repo::tree::Node;

/// The manifest types drydock pushes back: images, and indexes of them.
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Largest manifest: distribution refuses to store one over 4 MiB.
const MANIFEST_LIMIT: u64 = 4 << 20;

/// What `--project` and `--repository` ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub project: String,
    /// The full name, `<project>/…`.
    pub repository: Option<String>,
    pub tag: Option<String>,
}

impl Selection {
    /// `--repository` is the full name (`library/app`) or the name within the project
    /// (`app`); `:TAG` after it picks one tag.
    pub fn parse(project: &str, repository: Option<&str>) -> Result<Self> {
        if project.contains('/') || check_repository(project).is_err() {
            return Err(Error::Usage(format!(
                "--project {:?} is not a Harbor project name (lower-case letters, digits, '.', '_', '-')",
                project
            )));
        }
        let mut sel = Selection {
            project: project.to_string(),
            repository: None,
            tag: None,
        };
        let Some(given) = repository else {
            return Ok(sel);
        };
        let (name, tag) = match given.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
            _ => (given, None),
        };
        let full = match name.starts_with(&format!("{project}/")) {
            true => name.to_string(),
            false => format!("{project}/{name}"),
        };
        let bad = || {
            Error::Usage(format!(
                "--repository {:?} is not a repository name (NAME or NAME:TAG, lower-case)",
                given
            ))
        };
        check_repository(&full).map_err(|_| bad())?;
        if let Some(t) = tag {
            check_reference(t).map_err(|_| bad())?;
        }
        sel.repository = Some(full);
        sel.tag = tag.map(str::to_string);
        Ok(sel)
    }
}

/// The links of one repository in the snapshot.
#[derive(Clone, Debug, Default)]
pub struct RepoLinks {
    pub tags: BTreeMap<String, Digest>,
    pub revisions: BTreeSet<Digest>,
    pub layers: BTreeSet<Digest>,
}

/// The registry part's repositories, by name; names and tags that are no valid OCI name
/// are set aside (and reported), never used.
#[derive(Debug, Default)]
pub struct Inventory {
    pub repositories: BTreeMap<String, RepoLinks>,
    pub refused: BTreeSet<String>,
}

/// The project of a repository name: its first component.
pub fn project_of(repository: &str) -> &str {
    repository.split('/').next().unwrap_or(repository)
}

impl Inventory {
    pub fn of(links: &[Link]) -> Self {
        let mut inv = Inventory::default();
        for l in links {
            let name = l.repository();
            if check_repository(name).is_err() {
                inv.refused.insert(format!("repository {name:?}"));
                continue;
            }
            let repo = inv.repositories.entry(name.to_string()).or_default();
            let rest = &l.path[name.len()..];
            if let Some((_, tag)) = l.tag() {
                if check_reference(tag).is_ok() {
                    repo.tags.insert(tag.to_string(), l.digest.clone());
                } else {
                    inv.refused.insert(format!("tag {name}:{tag:?}"));
                }
            } else if rest.starts_with("/_manifests/revisions/") {
                repo.revisions.insert(l.digest.clone());
            } else if rest.starts_with("/_layers/") {
                repo.layers.insert(l.digest.clone());
            }
        }
        inv
    }

    /// Each project with its number of repositories.
    pub fn projects(&self) -> BTreeMap<&str, usize> {
        let mut out = BTreeMap::new();
        for name in self.repositories.keys() {
            *out.entry(project_of(name)).or_default() += 1;
        }
        out
    }

    /// The repositories `sel` names, or a usage error that lists what the snapshot has.
    pub fn select(&self, sel: &Selection) -> Result<Vec<(&str, &RepoLinks)>> {
        let in_project: Vec<(&str, &RepoLinks)> = self
            .repositories
            .iter()
            .filter(|(name, _)| project_of(name) == sel.project)
            .map(|(n, l)| (n.as_str(), l))
            .collect();
        if in_project.is_empty() {
            let held: Vec<String> = self
                .projects()
                .iter()
                .map(|(p, n)| format!("{p} ({n} repositories)"))
                .collect();
            return Err(Error::Usage(format!(
                "the snapshot's registry part has no project {}; it has: {}",
                sel.project,
                list_or_none(&held)
            )));
        }
        let Some(wanted) = &sel.repository else {
            return Ok(in_project);
        };
        let Some(&(name, links)) = in_project.iter().find(|(n, _)| *n == wanted.as_str()) else {
            let held: Vec<&str> = in_project.iter().map(|(n, _)| *n).collect();
            return Err(Error::Usage(format!(
                "project {} has no repository {wanted} in the snapshot; it has: {}",
                sel.project,
                held.join(", ")
            )));
        };
        if let Some(tag) = &sel.tag {
            if !links.tags.contains_key(tag) {
                let held: Vec<&str> = links.tags.keys().map(String::as_str).collect();
                return Err(Error::Usage(format!(
                    "repository {name} has no tag {tag} in the snapshot; it has: {}",
                    list_or_none(&held)
                )));
            }
        }
        Ok(vec![(name, links)])
    }

    /// The repositories that link `digest` as a layer, for a cross-repository mount.
    pub fn holders(&self) -> HashMap<&Digest, Vec<&str>> {
        let mut out: HashMap<&Digest, Vec<&str>> = HashMap::new();
        for (name, links) in &self.repositories {
            for d in &links.layers {
                out.entry(d).or_default().push(name.as_str());
            }
        }
        out
    }
}

fn list_or_none<T: AsRef<str>>(items: &[T]) -> String {
    match items.is_empty() {
        true => "none".into(),
        false => items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A manifest to push, checked against its digest, and the blobs it names.
#[derive(Clone, Debug)]
pub struct Image {
    pub digest: Digest,
    pub manifest: Manifest,
    pub blobs: Vec<Digest>,
}

/// What one repository's restore pushes.
#[derive(Clone, Debug)]
pub struct RepoPlan {
    pub name: String,
    /// Children of an index before it.
    pub images: Vec<Image>,
    pub tags: Vec<(String, Digest)>,
    /// Every blob the images name, with its size.
    pub blobs: BTreeMap<Digest, u64>,
}

impl RepoPlan {
    pub fn bytes(&self) -> u64 {
        self.blobs.values().sum()
    }

    pub fn image(&self, digest: &Digest) -> Option<&Image> {
        self.images.iter().find(|i| &i.digest == digest)
    }
}

/// The snapshot's blobs by digest.
pub struct Source<'a> {
    pub reader: &'a BlobReader,
    pub nodes: HashMap<Digest, Node>,
}

impl Source<'_> {
    pub fn node(&self, digest: &Digest, what: &str) -> Result<&Node> {
        self.nodes.get(digest).ok_or_else(|| {
            Error::Integrity(format!(
                "the snapshot's registry part lacks {what} {digest}; nothing was pushed"
            ))
        })
    }

    /// The plan for one repository: its tags (only `tag` if given) and, for a whole
    /// repository, its untagged manifests too; children before the index naming them.
    pub async fn plan(&self, name: &str, links: &RepoLinks, tag: Option<&str>) -> Result<RepoPlan> {
        let tags: Vec<(String, Digest)> = links
            .tags
            .iter()
            .filter(|(t, _)| tag.is_none_or(|w| w == t.as_str()))
            .map(|(t, d)| (t.clone(), d.clone()))
            .collect();
        let mut roots: BTreeSet<Digest> = tags.iter().map(|(_, d)| d.clone()).collect();
        if tag.is_none() {
            roots.extend(links.revisions.iter().cloned());
        }
        let mut plan = RepoPlan {
            name: name.to_string(),
            images: Vec::new(),
            tags,
            blobs: BTreeMap::new(),
        };
        let mut done: HashSet<Digest> = HashSet::new();
        for root in roots {
            self.visit(name, root, &mut done, &mut plan).await?;
        }
        Ok(plan)
    }

    /// Depth first, children first; a manifest met again is already planned. A cycle
    /// would need a manifest to hold its own digest: refused all the same.
    async fn visit(
        &self,
        repo: &str,
        root: Digest,
        done: &mut HashSet<Digest>,
        plan: &mut RepoPlan,
    ) -> Result<()> {
        let mut entered: HashSet<Digest> = HashSet::new();
        let mut stack: Vec<(Digest, Option<Image>)> = vec![(root, None)];
        while let Some((digest, loaded)) = stack.pop() {
            if done.contains(&digest) {
                continue;
            }
            if let Some(image) = loaded {
                for b in &image.blobs {
                    plan.blobs.insert(b.clone(), self.node(b, "blob")?.size);
                }
                done.insert(digest);
                plan.images.push(image);
                continue;
            }
            if !entered.insert(digest.clone()) {
                return Err(Error::Refused(format!(
                    "manifest {digest} of {repo} names itself through its children; drydock will not push it"
                )));
            }
            let (image, children) = self.load(repo, &digest).await?;
            stack.push((digest, Some(image)));
            stack.extend(children.into_iter().rev().map(|c| (c, None)));
        }
        Ok(())
    }

    /// A manifest from the snapshot, checked against its digest, and its children.
    async fn load(&self, repo: &str, digest: &Digest) -> Result<(Image, Vec<Digest>)> {
        let node = self.node(digest, &format!("manifest of {repo}:"))?;
        if node.size > MANIFEST_LIMIT {
            return Err(Error::Refused(format!(
                "manifest {digest} of {repo} is {} bytes, over the registry's 4 MiB",
                node.size
            )));
        }
        let (_, entry) = load_entry(self.reader, node).await?;
        let mut bytes = Vec::with_capacity(entry.size as usize);
        let mut chunks = std::pin::pin!(self.reader.load_stream(&entry.content, BlobType::Data, 4));
        while let Some(chunk) = chunks.next().await {
            bytes.extend(chunk?);
        }
        bytes.truncate(entry.size as usize);
        if hex::encode(Sha256::digest(&bytes)) != digest.hex() {
            return Err(Error::Integrity(format!(
                "the snapshot's bytes of manifest {digest} of {repo} do not match its digest"
            )));
        }
        let (media_type, children, blobs) = parse_manifest(repo, digest, &bytes)?;
        let image = Image {
            digest: digest.clone(),
            manifest: Manifest { media_type, bytes },
            blobs,
        };
        Ok((image, children))
    }
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    urls: Vec<String>,
}

impl Descriptor {
    /// A layer the registry does not hold (Windows base layers): fetched from its URLs.
    fn is_foreign(&self) -> bool {
        let t = self.media_type.as_deref().unwrap_or_default();
        !self.urls.is_empty() || t.contains("foreign") || t.contains("nondistributable")
    }
}

/// A manifest's media type, the manifests it names (an index) and the blobs (an image).
fn parse_manifest(
    repo: &str,
    digest: &Digest,
    bytes: &[u8],
) -> Result<(String, Vec<Digest>, Vec<Digest>)> {
    let refuse = |why: String| Error::Refused(format!("manifest {digest} of {repo} {why}"));
    let raw: RawManifest = serde_json::from_slice(bytes)
        .map_err(|e| refuse(format!("is not a manifest drydock can read ({e})")))?;
    if raw.schema_version != Some(2) {
        return Err(refuse(
            "is not schema version 2 (Harbor refuses schema 1 pushes)".into(),
        ));
    }
    let inferred = match raw.config.is_some() {
        true => OCI_MANIFEST,
        false => OCI_INDEX,
    };
    let media_type = raw.media_type.unwrap_or_else(|| inferred.to_string());
    let parse = |d: &Descriptor| {
        Digest::parse(&d.digest).map_err(|_| refuse(format!("names {:?}", d.digest)))
    };
    match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => {
            let children = raw.manifests.iter().map(parse).collect::<Result<_>>()?;
            Ok((media_type, children, Vec::new()))
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let config = raw
                .config
                .as_ref()
                .ok_or_else(|| refuse("has no config".into()))?;
            let blobs = std::iter::once(config)
                .chain(raw.layers.iter().filter(|l| !l.is_foreign()))
                .map(parse)
                .collect::<Result<_>>()?;
            Ok((media_type, Vec::new(), blobs))
        }
        other => Err(refuse(format!(
            "is of media type {:?}, which drydock does not push back",
            other
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", hex::encode([n; 32]))).unwrap()
    }

    fn link(path: &str, digest: Digest) -> Link {
        Link {
            path: path.into(),
            digest,
        }
    }

    #[test]
    fn selections() {
        let s = Selection::parse("library", Some("app:v1")).unwrap();
        assert_eq!(s.repository.as_deref(), Some("library/app"));
        assert_eq!(s.tag.as_deref(), Some("v1"));
        let s = Selection::parse("library", Some("library/team/app")).unwrap();
        assert_eq!(s.repository.as_deref(), Some("library/team/app"));
        assert_eq!(s.tag, None);
        for (p, r) in [
            ("Library", None),
            ("a/b", None),
            ("..", None),
            ("lib", Some("../x")),
            ("lib", Some("App")),
            ("lib", Some("app:-x")),
        ] {
            assert!(
                matches!(Selection::parse(p, r), Err(Error::Usage(_))),
                "{p} {r:?}"
            );
        }
    }

    #[test]
    fn inventory_keeps_to_the_project_and_sets_bad_names_aside() {
        let links = vec![
            link("library/app/_manifests/tags/v1/current/link", d(1)),
            link("library/app/_manifests/revisions/sha256/x/link", d(1)),
            link("library/app/_layers/sha256/x/link", d(2)),
            link("library2/app/_layers/sha256/x/link", d(2)),
            link("Evil/app/_manifests/tags/v1/current/link", d(3)),
            link("team/app/_manifests/tags/.x/current/link", d(3)),
        ];
        let inv = Inventory::of(&links);
        assert_eq!(inv.refused.len(), 2, "{:?}", inv.refused);
        let sel = Selection::parse("library", None).unwrap();
        let chosen: Vec<&str> = inv.select(&sel).unwrap().iter().map(|(n, _)| *n).collect();
        assert_eq!(chosen, vec!["library/app"]);
        let e = inv
            .select(&Selection::parse("nosuch", None).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("library (1 repositories), library2 (1"), "{e}");
        let e = inv
            .select(&Selection::parse("library", Some("app:v9")).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("has no tag v9") && e.contains("it has: v1"),
            "{e}"
        );
        assert_eq!(inv.holders()[&d(2)], vec!["library/app", "library2/app"]);
    }

    #[test]
    fn manifests_name_children_and_blobs() {
        let image = serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"digest": d(1).as_str()},
            "layers": [{"digest": d(2).as_str()},
                       {"digest": d(3).as_str(), "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"}],
        });
        let (t, c, b) = parse_manifest("r", &d(9), image.to_string().as_bytes()).unwrap();
        assert_eq!(
            (t.as_str(), c, b),
            (DOCKER_MANIFEST, vec![], vec![d(1), d(2)])
        );
        let index =
            serde_json::json!({"schemaVersion": 2, "manifests": [{"digest": d(4).as_str()}]});
        let (t, c, _) = parse_manifest("r", &d(9), index.to_string().as_bytes()).unwrap();
        assert_eq!((t.as_str(), c), (OCI_INDEX, vec![d(4)]));
        for bad in [
            serde_json::json!({"schemaVersion": 1, "fsLayers": []}),
            serde_json::json!({"schemaVersion": 2, "mediaType": "text/html"}),
            serde_json::json!({"schemaVersion": 2, "manifests": [{"digest": "../x"}]}),
        ] {
            let e = parse_manifest("r", &d(9), bad.to_string().as_bytes()).unwrap_err();
            assert!(matches!(e, Error::Refused(_)), "{e}");
        }
    }
}
