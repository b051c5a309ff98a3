//! The configuration part: files and directories (harbor.yml, `/etc/core/key`, mounted
//! Kubernetes Secrets) with mode, owner and mtime.
//!
//! Paths named on the command line are followed if they are symlinks; inside a directory,
//! symlinks are kept as symlinks. That keeps a Secret volume's `..data` → `..2026_…`
//! layout intact, so the restored directory shows the same files.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::beneath::{self, Dir, Meta, Root};
use crate::error::{Error, Result};
use crate::ids::BlobId;
use crate::repo::blob::{BlobType, Salt};
use crate::repo::reader::BlobReader;
use crate::repo::restorer::{self, FileJob, Staged};
use crate::repo::tree::{Node, NodeKind, Tree};
use crate::repo::writer::{BlobWriter, OnBytes};
use crate::repo::Repository;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConfigPart {
    pub roots: Vec<ConfigRoot>,
}

/// One `--config` path: its absolute source path and what was there.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConfigRoot {
    pub path: String,
    pub node: Node,
}

impl ConfigPart {
    pub fn root_trees(&self) -> Vec<BlobId> {
        self.roots.iter().filter_map(|r| r.node.subtree).collect()
    }

    pub fn root_data(&self) -> Vec<BlobId> {
        self.roots
            .iter()
            .flat_map(|r| r.node.content.iter().copied())
            .collect()
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Counts {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

pub struct ConfigBackup {
    pub part: ConfigPart,
    pub counts: Counts,
    /// Entries skipped (unreadable, special files, non-UTF-8 names): the snapshot is partial.
    pub warnings: Vec<String>,
}

/// Fail early, before anything is written, if a `--config` path cannot be backed up, or
/// would make a snapshot restore refuses (`/`, or one path inside another).
pub fn validate_paths(paths: &[PathBuf]) -> Result<()> {
    let mut abs = Vec::new();
    for p in paths {
        fs::metadata(p).map_err(|e| {
            Error::Usage(format!(
                "--config {}: {e}; give an existing file or directory",
                p.display()
            ))
        })?;
        let a = std::path::absolute(p)
            .map_err(|e| Error::io(format!("cannot resolve {}", p.display()), e))?;
        let a = normalize(&a).to_string_lossy().into_owned();
        if a == "/" {
            return Err(Error::Usage(
                "--config /: give the directories below / to back up instead".into(),
            ));
        }
        abs.push(a);
    }
    let rels: Vec<&str> = abs.iter().map(|a| a.trim_start_matches('/')).collect();
    if let Some((a, b)) = first_overlap(&rels) {
        return Err(Error::Usage(format!(
            "--config /{a} and /{b} overlap; give only /{a}"
        )));
    }
    Ok(())
}

/// Two of `paths` (relative, `/`-separated) of which one is, or is inside, the other.
fn first_overlap<'a>(paths: &[&'a str]) -> Option<(&'a str, &'a str)> {
    let mut sorted: Vec<(Vec<&str>, &str)> =
        paths.iter().map(|p| (p.split('/').collect(), *p)).collect();
    // Sorted by components, a path is directly followed by one inside it, if there is one.
    sorted.sort();
    sorted
        .windows(2)
        .find(|w| w[1].0.starts_with(&w[0].0))
        .map(|w| (w[0].1, w[1].1))
}

/// Back up every path. Blocking: run on a blocking thread.
pub fn backup(
    writer: &BlobWriter,
    paths: &[PathBuf],
    progress: &dyn OnBytes,
) -> Result<ConfigBackup> {
    let mut walker = Walker {
        writer,
        progress,
        counts: Counts::default(),
        warnings: Vec::new(),
        salt: Salt::generate(),
    };
    let mut roots = Vec::new();
    for p in paths {
        let abs = normalize(
            &std::path::absolute(p)
                .map_err(|e| Error::io(format!("cannot resolve {}", p.display()), e))?,
        );
        let path = abs
            .to_str()
            .ok_or_else(|| {
                Error::Usage(format!("--config {}: the path is not UTF-8", abs.display()))
            })?
            .to_string();
        let name = abs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into());
        match walker.node(&abs, name, true)? {
            Some(node) => roots.push(ConfigRoot { path, node }),
            None => {
                return Err(Error::Usage(format!(
                    "--config {path}: cannot be backed up: {}",
                    walker.warnings.join("; ")
                )))
            }
        }
    }
    Ok(ConfigBackup {
        part: ConfigPart { roots },
        counts: walker.counts,
        warnings: walker.warnings,
    })
}

/// Remove `.` and `..` lexically, so the recorded path is one restore accepts.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

struct Walker<'a> {
    writer: &'a BlobWriter,
    progress: &'a dyn OnBytes,
    counts: Counts,
    warnings: Vec<String>,
    /// The salt of this backup's sealed small files (FORMAT.md §5 "Small files").
    salt: Salt,
}

impl Walker<'_> {
    /// Store a file: sealed when it is small (a Secret value, a key, a certificate), so its
    /// id confirms no guess and its length does not show; chunked otherwise.
    fn file_content(&mut self, mut file: fs::File, len: u64) -> Result<(Vec<BlobId>, u64)> {
        let limit = self.writer.small_file_limit();
        if len >= limit {
            return self.writer.save_stream(file, self.progress);
        }
        let mut head = Vec::with_capacity(len as usize);
        (&mut file)
            .take(limit)
            .read_to_end(&mut head)
            .map_err(|e| Error::io("cannot read a configuration file", e))?;
        if head.len() as u64 >= limit {
            // It grew while being read: chunk it like any large file.
            let rest = std::io::Cursor::new(head).chain(file);
            return self.writer.save_stream(rest, self.progress);
        }
        if head.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let id = self.writer.save_sealed(&head, &self.salt)?;
        self.progress.bytes(head.len() as u64);
        Ok((vec![id], head.len() as u64))
    }

    /// The node for `path`, or `None` (with a warning) if it is skipped.
    fn node(&mut self, path: &Path, name: String, follow: bool) -> Result<Option<Node>> {
        let meta = if follow {
            fs::metadata(path)
        } else {
            fs::symlink_metadata(path)
        };
        let meta = match meta {
            Ok(m) => m,
            Err(e) => return Ok(self.skip(path, &e.to_string())),
        };
        let mut node = Node {
            mode: meta.mode() & 0o7777,
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            ..Node::new(name, NodeKind::File)
        };
        let ft = meta.file_type();
        if ft.is_file() {
            let file = match fs::File::open(path) {
                Ok(f) => f,
                Err(e) => return Ok(self.skip(path, &e.to_string())),
            };
            let (content, size) = self.file_content(file, meta.len())?;
            if size != meta.len() {
                self.warnings
                    .push(format!("{}: changed size while being read", path.display()));
            }
            node.content = content;
            node.size = size;
            self.counts.files += 1;
            self.counts.bytes += size;
        } else if ft.is_dir() {
            node.kind = NodeKind::Dir;
            node.subtree = Some(self.dir(path)?);
            self.counts.dirs += 1;
        } else if ft.is_symlink() {
            let target = fs::read_link(path)
                .map_err(|e| Error::io(format!("cannot read link {}", path.display()), e))?;
            match target.to_str() {
                Some(t) => node.target = Some(t.to_string()),
                None => return Ok(self.skip(path, "symlink target is not UTF-8")),
            }
            node.kind = NodeKind::Symlink;
            self.counts.symlinks += 1;
        } else {
            return Ok(self.skip(path, "not a regular file, directory or symlink"));
        }
        Ok(Some(node))
    }

    fn dir(&mut self, path: &Path) -> Result<BlobId> {
        let mut names: Vec<(String, PathBuf)> = Vec::new();
        let entries = fs::read_dir(path)
            .map_err(|e| Error::io(format!("cannot list {}", path.display()), e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::io(format!("cannot list {}", path.display()), e))?;
            match entry.file_name().into_string() {
                Ok(n) => names.push((n, entry.path())),
                Err(_) => {
                    self.skip(&entry.path(), "the name is not UTF-8");
                }
            }
        }
        names.sort();
        let mut tree = Tree::default();
        for (name, child) in names {
            if let Some(node) = self.node(&child, name, false)? {
                tree.nodes.push(node);
            }
        }
        self.writer.save(BlobType::Tree, &tree.to_bytes())
    }

    fn skip(&mut self, path: &Path, why: &str) -> Option<Node> {
        tracing::warn!(path = %crate::term::esc(path.display()), why, "skipped");
        self.warnings
            .push(format!("{}: skipped: {why}", path.display()));
        None
    }
}

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub target: PathBuf,
    pub force: bool,
    pub dry_run: bool,
    pub parallel: usize,
}

/// Where a root goes under the target: its absolute source path below the target.
pub fn destination(target: &Path, root: &ConfigRoot) -> PathBuf {
    target.join(root.path.strip_prefix('/').unwrap_or(&root.path))
}

/// A tree's names come from the repository; never let one escape the target.
fn safe_name(name: &str) -> Result<&str> {
    beneath::safe_name(name)
}

/// Refuse roots that would not land strictly below the target, one by one: `/` or an
/// empty path (the target itself), and `.`, `..` or empty components; and roots that
/// overlap (restoring one would write into or through the other).
fn check_roots(part: &ConfigPart) -> Result<()> {
    let mut rels = Vec::new();
    for root in &part.roots {
        let rel = root.path.strip_prefix('/').unwrap_or(&root.path);
        if rel.is_empty() {
            return Err(Error::Integrity(format!(
                "the snapshot has the configuration root {:?}, which names the restore target \
                 itself; refusing to restore it",
                root.path
            )));
        }
        for component in rel.split('/') {
            safe_name(component)?;
        }
        rels.push(rel);
    }
    if let Some((a, b)) = first_overlap(&rels) {
        return Err(Error::Integrity(format!(
            "the snapshot's configuration roots /{a} and /{b} overlap; refusing to restore"
        )));
    }
    Ok(())
}

fn is_non_empty_dir(p: &Path) -> bool {
    fs::read_dir(p)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

/// Everything to restore, flattened: directories before their children.
pub async fn plan(
    reader: &BlobReader,
    part: &ConfigPart,
    target: &Path,
) -> Result<Vec<(PathBuf, Node)>> {
    check_roots(part)?;
    let mut out = Vec::new();
    let mut level: Vec<(PathBuf, Node)> = part
        .roots
        .iter()
        .map(|root| (destination(target, root), root.node.clone()))
        .collect();
    // Level by level, so the trees of one level load concurrently.
    while !level.is_empty() {
        let trees: Vec<Option<Tree>> = stream::iter(level.iter().map(|(_, n)| n.subtree))
            .map(|t| async move {
                match t {
                    Some(id) => reader.load_tree(&id).await.map(Some),
                    None => Ok(None),
                }
            })
            .buffered(16)
            .try_collect()
            .await?;
        let mut next = Vec::new();
        for ((path, node), tree) in level.into_iter().zip(trees) {
            if let Some(tree) = tree {
                let mut names = std::collections::HashSet::new();
                for child in tree.nodes {
                    if !names.insert(child.name.clone()) {
                        return Err(Error::Integrity(format!(
                            "tree {} names {:?} twice",
                            node.subtree.map(|t| t.short()).unwrap_or_default(),
                            child.name
                        )));
                    }
                    next.push((path.join(safe_name(&child.name)?), child));
                }
            }
            out.push((path, node));
        }
        level = next;
    }
    Ok(out)
}

/// The secretKeys the part holds, by source path: files with a key's name
/// ([`secretkey::is_key_name`]) and a key's content. Symlinks are not followed: a mounted
/// Secret's real file is found in its `..<timestamp>` directory.
///
/// [`secretkey::is_key_name`]: crate::harbor::secretkey::is_key_name
pub async fn secret_keys(
    reader: &BlobReader,
    part: &ConfigPart,
) -> Result<Vec<(PathBuf, crate::harbor::db::encrypted::HarborKey)>> {
    use crate::harbor::{db::encrypted::HarborKey, secretkey};
    let mut keys = Vec::new();
    for (path, node) in plan(reader, part, Path::new("/")).await? {
        let size = node.size as usize;
        if node.kind != NodeKind::File
            || !secretkey::is_key_name(&path)
            || !(secretkey::KEY_LEN..=secretkey::KEY_LEN + 1).contains(&size)
        {
            continue;
        }
        let blobs: Vec<Vec<u8>> = reader
            .load_stream(&node.content, BlobType::Data, 1)
            .try_collect()
            .await?;
        let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(size));
        for b in blobs {
            bytes.extend_from_slice(&zeroize::Zeroizing::new(b));
        }
        bytes.truncate(size);
        if let Some(k) = HarborKey::from_file_bytes(&bytes) {
            keys.push((path, k));
        }
    }
    Ok(keys)
}

pub async fn restore(
    reader: &BlobReader,
    part: &ConfigPart,
    opts: &RestoreOptions,
    progress: Arc<dyn OnBytes + Send + Sync>,
) -> Result<(Counts, Vec<(PathBuf, Node)>)> {
    if !opts.force && is_non_empty_dir(&opts.target) {
        return Err(Error::Usage(format!(
            "restore target {} is not empty; give an empty directory, or --force to overwrite",
            opts.target.display()
        )));
    }
    let items = plan(reader, part, &opts.target).await?;
    let mut counts = Counts::default();
    for (_, n) in &items {
        match n.kind {
            NodeKind::File => {
                counts.files += 1;
                counts.bytes += n.size;
            }
            NodeKind::Dir => counts.dirs += 1,
            NodeKind::Symlink => counts.symlinks += 1,
        }
    }
    if opts.dry_run {
        return Ok((counts, items));
    }
    progress.total(counts.bytes);
    let root = Root::create(&opts.target)?;
    let target = &opts.target;
    // The directories a root sits in are not in the snapshot: created as needed, and an
    // existing one is used only if it is a real directory.
    for r in &part.roots {
        let dest = destination(target, r);
        root.create_dirs(below(target, &dest).parent().unwrap_or(Path::new("")))?;
    }
    for (path, _) in items.iter().filter(|(_, n)| n.kind == NodeKind::Dir) {
        let (dir, name) = parent_and_name(&root, below(target, path))?;
        // Writable for us until the final mode is applied.
        dir.make_dir(name, 0o700, opts.force)?.set_mode(0o700)?;
    }
    restore_files(reader, &root, &items, opts, &*progress).await?;
    // Symlinks only once every file is written, so no write can pass through one.
    for (path, node) in items.iter().filter(|(_, n)| n.kind == NodeKind::Symlink) {
        let (dir, name) = parent_and_name(&root, below(target, path))?;
        if opts.force {
            dir.remove(name)?;
        }
        let to = node.target.as_deref().unwrap_or_default();
        dir.symlink(to, name, &meta(node))?;
    }
    // Directory metadata last, deepest first, so writing children does not bump mtimes
    // and read-only directories do not block their own restore.
    for (path, node) in items.iter().rev().filter(|(_, n)| n.kind == NodeKind::Dir) {
        let dir = root.dir(below(target, path))?;
        beneath::set_meta(dir.fd(), &meta(node), path)?;
    }
    Ok((counts, items))
}

/// `path`, planned below `target`, relative to it.
fn below<'p>(target: &Path, path: &'p Path) -> &'p Path {
    path.strip_prefix(target).expect("planned below the target")
}

/// The directory holding `rel` (opened beneath the target) and `rel`'s name in it.
fn parent_and_name<'r, 'p>(root: &'r Root, rel: &'p Path) -> Result<(Dir<'r>, &'p str)> {
    let name = rel
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Integrity(format!("{} names no entry", rel.display())))?;
    Ok((root.dir(rel.parent().unwrap_or(Path::new("")))?, name))
}

/// Mode, owner and mtime of a node.
fn meta(node: &Node) -> Meta {
    Meta {
        mode: node.mode,
        uid: node.uid,
        gid: node.gid,
        mtime: node.mtime,
        mtime_nsec: node.mtime_nsec,
    }
}

/// Write every file and move each into place as soon as it is complete, its metadata set
/// through its descriptor first; files are fetched together, pack by pack ([`restorer`]).
async fn restore_files(
    reader: &BlobReader,
    root: &Root,
    items: &[(PathBuf, Node)],
    opts: &RestoreOptions,
    progress: &dyn OnBytes,
) -> Result<()> {
    let files: Vec<&(PathBuf, Node)> = items
        .iter()
        .filter(|(_, n)| n.kind == NodeKind::File)
        .collect();
    let jobs: Vec<FileJob> = files
        .iter()
        .map(|(path, node)| FileJob {
            path: below(&opts.target, path).to_path_buf(),
            content: &node.content,
            size: node.size,
        })
        .collect();
    let done = |i: usize, staged: Staged<'_>| -> Result<()> {
        let (path, node) = files[i];
        beneath::set_meta(&staged.file, &meta(node), path)?;
        // --force over a directory of the same name: replace it, as files and links are.
        if opts.force && staged.dir.is_dir(staged.name)? {
            staged.dir.remove(staged.name)?;
        }
        staged.commit()
    };
    restorer::restore_files(reader, root, &jobs, opts.parallel, progress, done).await
}

/// Compare files under `target` (laid out as a restore would) with the snapshot: missing,
/// extra, different kind, size, content, link target, mode or mtime. Content is compared by
/// chunking the local file with the repository's keyed chunker, so nothing is downloaded but
/// the small files, which are sealed.
pub async fn verify(
    reader: &BlobReader,
    repo: &Repository,
    part: &ConfigPart,
    target: &Path,
) -> Result<Vec<String>> {
    let items = plan(reader, part, target).await?;
    let params = repo.config.chunker;
    let key = repo.keys.chunk_key("verifying")?.clone();
    let sealed = sealed_contents(reader, &items, params.min_size as u64).await?;
    let items = Arc::new(items);
    let shared = items.clone();
    tokio::task::spawn_blocking(move || {
        let planned: std::collections::HashSet<&Path> =
            shared.iter().map(|(p, _)| p.as_path()).collect();
        let mut diffs = Vec::new();
        for (path, node) in shared.iter() {
            let expected = Expected {
                params: &params,
                key: &key,
                sealed: sealed.get(path).map(Vec::as_slice),
            };
            compare_one(path, node, &expected, &mut diffs);
            if node.kind == NodeKind::Dir {
                if let Ok(entries) = fs::read_dir(path) {
                    let mut extra: Vec<PathBuf> = entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| !planned.contains(p.as_path()))
                        .collect();
                    extra.sort();
                    diffs.extend(
                        extra
                            .into_iter()
                            .map(|p| format!("{}: not in the snapshot", p.display())),
                    );
                }
            }
        }
        Ok(diffs)
    })
    .await
    .map_err(|e| Error::Other(format!("verify task failed: {e}")))?
}

/// The content of every small file, which backup stores sealed (FORMAT.md §5): its id has
/// a salt in it, so it is compared by content, not by recomputing ids. Small files only, so
/// this downloads little.
async fn sealed_contents(
    reader: &BlobReader,
    items: &[(PathBuf, Node)],
    small: u64,
) -> Result<std::collections::HashMap<PathBuf, Vec<u8>>> {
    let sealed: Vec<(&PathBuf, &Node)> = items
        .iter()
        .filter(|(_, n)| n.kind == NodeKind::File && n.content.len() == 1 && n.size < small)
        .map(|(p, n)| (p, n))
        .collect();
    let ids: Vec<BlobId> = sealed.iter().map(|(_, n)| n.content[0]).collect();
    // Neighbouring blobs come in one range request, a few requests at a time.
    let blobs: Vec<Vec<u8>> = reader
        .load_stream(&ids, BlobType::Data, SEALED_FETCHES)
        .try_collect()
        .await?;
    Ok(sealed
        .into_iter()
        .zip(blobs)
        .map(|((path, node), mut data)| {
            data.truncate(node.size as usize);
            (path.clone(), data)
        })
        .collect())
}

/// Range requests in flight while `verify` fetches sealed small files.
const SEALED_FETCHES: usize = 4;

/// What a local file must hold: the ids its chunks must have, or a sealed file's bytes.
struct Expected<'a> {
    params: &'a crate::chunker::ChunkerParams,
    key: &'a crate::crypto::ChunkKey,
    sealed: Option<&'a [u8]>,
}

impl Expected<'_> {
    fn matches(&self, path: &Path, node: &Node) -> bool {
        if let Some(bytes) = self.sealed {
            return fs::read(path).is_ok_and(|local| local == bytes);
        }
        let Ok(f) = fs::File::open(path) else {
            return false;
        };
        let ids: Result<Vec<BlobId>> =
            crate::chunker::chunks(f, self.params, self.key.chunker_seed())
                .map(|c| c.map(|c| self.key.blob_id(BlobType::Data as u8, &c.data)))
                .collect();
        ids.is_ok_and(|ids| ids == node.content)
    }
}

fn compare_one(path: &Path, node: &Node, expected: &Expected<'_>, diffs: &mut Vec<String>) {
    let shown = path.display();
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(_) => return diffs.push(format!("{shown}: missing")),
    };
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else {
        NodeKind::File
    };
    if kind != node.kind {
        return diffs.push(format!(
            "{shown}: is a {kind:?}, the snapshot has a {:?}",
            node.kind
        ));
    }
    match kind {
        NodeKind::Symlink => {
            let t = fs::read_link(path)
                .ok()
                .and_then(|t| t.to_str().map(str::to_string));
            if t != node.target {
                diffs.push(format!(
                    "{shown}: links to {t:?}, the snapshot to {:?}",
                    node.target
                ));
            }
            return;
        }
        NodeKind::File if meta.len() != node.size => {
            return diffs.push(format!(
                "{shown}: {} bytes, the snapshot has {}",
                meta.len(),
                node.size
            ));
        }
        NodeKind::File => {
            if !expected.matches(path, node) {
                return diffs.push(format!("{shown}: content differs"));
            }
        }
        NodeKind::Dir => {}
    }
    if meta.mode() & 0o7777 != node.mode {
        diffs.push(format!(
            "{shown}: mode {:04o}, the snapshot has {:04o}",
            meta.mode() & 0o7777,
            node.mode
        ));
    }
    if kind == NodeKind::File
        && (meta.mtime(), meta.mtime_nsec() as u32) != (node.mtime, node.mtime_nsec)
    {
        diffs.push(format!(
            "{shown}: modified at a different time than in the snapshot"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names_are_refused() {
        for bad in ["", ".", "..", "a/b", "x\0"] {
            assert!(safe_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(safe_name("..data").unwrap(), "..data");
        assert_eq!(safe_name("harbor config.yml").unwrap(), "harbor config.yml");
    }

    #[test]
    fn paths_are_normalised_lexically() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(normalize(Path::new("/../x")), PathBuf::from("/x"));
    }

    fn part(paths: &[&str]) -> ConfigPart {
        ConfigPart {
            roots: paths
                .iter()
                .map(|p| ConfigRoot {
                    path: p.to_string(),
                    node: Node::new("n", NodeKind::Dir),
                })
                .collect(),
        }
    }

    #[test]
    fn roots_that_name_the_target_or_overlap_are_refused() {
        for bad in [
            &["/"][..],
            &[""],
            &["//x"],
            &["/x/"],
            &["/x/./y"],
            &["/x/../y"],
            &["/x", "/x"],
            &["/x", "/x/link"],
            &["/a/b/c", "/z", "/a/b"],
        ] {
            assert!(
                matches!(check_roots(&part(bad)), Err(Error::Integrity(_))),
                "{bad:?}"
            );
        }
        for good in [
            &["/x", "/xy", "/x y"][..],
            &["/etc/harbor", "/etc/core/key"],
        ] {
            check_roots(&part(good)).unwrap();
        }
    }

    #[test]
    fn destinations_stay_under_the_target() {
        let root = ConfigRoot {
            path: "/etc/harbor".into(),
            node: Node::new("harbor", NodeKind::Dir),
        };
        assert_eq!(
            destination(Path::new("/tmp/out"), &root),
            PathBuf::from("/tmp/out/etc/harbor")
        );
    }
}
