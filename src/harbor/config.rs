//! The configuration part: files and directories (harbor.yml, `/etc/core/key`, mounted
//! Kubernetes Secrets) with mode, owner and mtime.
//!
//! Paths named on the command line are followed if they are symlinks; inside a directory,
//! symlinks are kept as symlinks. That keeps a Secret volume's `..data` → `..2026_…`
//! layout intact, so the restored directory shows the same files.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::BlobId;
use crate::repo::blob::BlobType;
use crate::repo::reader::BlobReader;
use crate::repo::restorer::{self, FileJob};
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

/// Fail early, before anything is written, if a `--config` path cannot be backed up.
pub fn validate_paths(paths: &[PathBuf]) -> Result<()> {
    for p in paths {
        fs::metadata(p).map_err(|e| {
            Error::Usage(format!(
                "--config {}: {e}; give an existing file or directory",
                p.display()
            ))
        })?;
    }
    Ok(())
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
}

impl Walker<'_> {
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
            let (content, size) = self.writer.save_stream(file, self.progress)?;
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
        tracing::warn!(path = %path.display(), why, "skipped");
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
    target.join(root.path.trim_start_matches('/'))
}

/// A tree's names come from the repository; never let one escape the target.
fn safe_name(name: &str) -> Result<&str> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::Integrity(format!(
            "a tree holds the unsafe name {name:?}"
        )));
    }
    Ok(name)
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
    let mut out = Vec::new();
    let mut level = Vec::new();
    for root in &part.roots {
        for component in root.path.split('/').filter(|c| !c.is_empty()) {
            safe_name(component)?;
        }
        level.push((destination(target, root), root.node.clone()));
    }
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
    refuse_paths_through_symlinks(&items)?;
    progress.total(counts.bytes);
    let mut created_parents = std::collections::HashSet::new();
    for (path, node) in &items {
        no_symlink_between(&opts.target, path)?;
        match node.kind {
            NodeKind::Dir => create_dir(path)?,
            NodeKind::Symlink => {}
            NodeKind::File => {
                if let Some(parent) = path.parent() {
                    if created_parents.insert(parent.to_path_buf()) {
                        fs::create_dir_all(parent).map_err(|e| {
                            Error::io(format!("cannot create {}", parent.display()), e)
                        })?;
                    }
                }
            }
        }
    }
    restore_files(reader, &items, opts.parallel, &*progress).await?;
    // Symlinks only once every file is written, so no write can pass through one.
    for (path, node) in items.iter().filter(|(_, n)| n.kind == NodeKind::Symlink) {
        no_symlink_between(&opts.target, path)?;
        create_symlink(path, node, opts.force)?;
    }
    // Directory metadata last, deepest first, so writing children does not bump mtimes
    // and read-only directories do not block their own restore.
    for (path, node) in items.iter().rev().filter(|(_, n)| n.kind == NodeKind::Dir) {
        apply_metadata(path, node)?;
    }
    Ok((counts, items))
}

/// Refuse a snapshot in which one entry's path passes through another entry that is a
/// symlink (two roots can overlap): restoring it would write through the link.
fn refuse_paths_through_symlinks(items: &[(PathBuf, Node)]) -> Result<()> {
    let links: std::collections::HashSet<&Path> = items
        .iter()
        .filter(|(_, n)| n.kind == NodeKind::Symlink)
        .map(|(p, _)| p.as_path())
        .collect();
    for (path, _) in items {
        if let Some(link) = path.ancestors().skip(1).find(|a| links.contains(a)) {
            return Err(Error::Integrity(format!(
                "the snapshot places {} below its own symlink {}; refusing to restore through it",
                path.display(),
                link.display()
            )));
        }
    }
    Ok(())
}

/// Refuse a destination whose parent, below the target, is a symlink: a snapshot (or a
/// target restored over with --force) must not redirect writes outside the target.
fn no_symlink_between(target: &Path, path: &Path) -> Result<()> {
    let mut cur = path.parent();
    while let Some(dir) = cur {
        if dir == target || !dir.starts_with(target) {
            break;
        }
        if fs::symlink_metadata(dir)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false)
        {
            return Err(Error::Integrity(format!(
                "refusing to write {}: {} is a symlink",
                path.display(),
                dir.display()
            )));
        }
        cur = dir.parent();
    }
    Ok(())
}

fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path)
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
    // Writable for us until the final mode is applied.
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("cannot set permissions on {}", path.display()), e))
}

fn create_symlink(path: &Path, node: &Node, force: bool) -> Result<()> {
    if force && fs::symlink_metadata(path).is_ok() {
        remove_existing(path)?;
    }
    let target = node.target.as_deref().unwrap_or_default();
    std::os::unix::fs::symlink(target, path)
        .map_err(|e| Error::io(format!("cannot create symlink {}", path.display()), e))?;
    apply_metadata(path, node)
}

fn remove_existing(path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path)
        .map_err(|e| Error::io(format!("cannot inspect {}", path.display()), e))?;
    let r = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    r.map_err(|e| Error::io(format!("cannot replace {}", path.display()), e))
}

/// Write every file, then move each into place as soon as it is complete; files are
/// fetched together, pack by pack ([`restorer`]).
async fn restore_files(
    reader: &BlobReader,
    items: &[(PathBuf, Node)],
    parallel: usize,
    progress: &dyn OnBytes,
) -> Result<()> {
    let files: Vec<&(PathBuf, Node)> = items
        .iter()
        .filter(|(_, n)| n.kind == NodeKind::File)
        .collect();
    let jobs: Vec<FileJob> = files
        .iter()
        .map(|(path, node)| FileJob {
            path: path.clone(),
            content: &node.content,
            size: node.size,
        })
        .collect();
    let done = |i: usize, tmp: &Path| -> Result<()> {
        let (path, node) = files[i];
        if fs::symlink_metadata(path)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            remove_existing(path)?;
        }
        fs::rename(tmp, path)
            .map_err(|e| Error::io(format!("cannot move {} into place", path.display()), e))?;
        apply_metadata(path, node)
    };
    restorer::restore_files(reader, &jobs, parallel, progress, done).await
}

/// Mode, owner (when running as root) and mtime.
fn apply_metadata(path: &Path, node: &Node) -> Result<()> {
    let io = |what: &str, e| Error::io(format!("cannot set {what} of {}", path.display()), e);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))
            .map_err(|e| io("owner", e))?;
    }
    let mtime = filetime::FileTime::from_unix_time(node.mtime, node.mtime_nsec);
    if node.kind == NodeKind::Symlink {
        return filetime::set_symlink_file_times(path, mtime, mtime).map_err(|e| io("mtime", e));
    }
    fs::set_permissions(path, fs::Permissions::from_mode(node.mode)).map_err(|e| io("mode", e))?;
    filetime::set_file_times(path, mtime, mtime).map_err(|e| io("mtime", e))
}

/// Compare files under `target` (laid out as a restore would) with the snapshot: missing,
/// extra, different kind, size, content, link target, mode or mtime. Content is compared by
/// chunking the local file with the repository's keyed chunker, so nothing is downloaded.
pub async fn verify(
    reader: &BlobReader,
    repo: &Repository,
    part: &ConfigPart,
    target: &Path,
) -> Result<Vec<String>> {
    let items = plan(reader, part, target).await?;
    let params = repo.config.chunker;
    let key = repo.keys.chunk_key.clone();
    let items = Arc::new(items);
    let shared = items.clone();
    tokio::task::spawn_blocking(move || {
        let planned: std::collections::HashSet<&Path> =
            shared.iter().map(|(p, _)| p.as_path()).collect();
        let mut diffs = Vec::new();
        for (path, node) in shared.iter() {
            compare_one(path, node, &params, &key, &mut diffs);
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

fn compare_one(
    path: &Path,
    node: &Node,
    params: &crate::chunker::ChunkerParams,
    key: &crate::crypto::ChunkKey,
    diffs: &mut Vec<String>,
) {
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
            let same = fs::File::open(path).ok().and_then(|f| {
                let ids: Result<Vec<BlobId>> =
                    crate::chunker::chunks(f, params, key.chunker_seed())
                        .map(|c| c.map(|c| key.blob_id(BlobType::Data as u8, &c.data)))
                        .collect();
                ids.ok().map(|ids| ids == node.content)
            });
            if same != Some(true) {
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

    #[test]
    fn writes_through_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        fs::create_dir_all(t.join("real")).unwrap();
        std::os::unix::fs::symlink("/tmp", t.join("link")).unwrap();
        assert!(no_symlink_between(&t, &t.join("real/x")).is_ok());
        assert!(no_symlink_between(&t, &t.join("link/x")).is_err());
        assert!(no_symlink_between(&t, &t.join("link")).is_ok());
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
