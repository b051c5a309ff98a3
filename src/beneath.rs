//! Writing beneath a restore target, never outside it.
//!
//! Every name a restore writes comes from a snapshot, and a snapshot may be forged, and the
//! target may already hold symlinks (planted by an earlier restore, or by anyone who can
//! write there). So the target is held as a directory file descriptor ([`Root`]) and every
//! path below it is resolved by the kernel with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`: no symlink is ever followed, and nothing
//! resolves above the target. Operations other than open (mkdir, rename, unlink, symlink,
//! and metadata of symlinks) run on a parent directory ([`Dir`]) opened that way, with a
//! single-component name. Metadata of files and directories is set through their own
//! descriptor. Only the operator-given target path itself is opened normally.

use std::collections::HashSet;
use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags, Timestamps};
use rustix::io::Errno;

use crate::error::{Error, Result};

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Set once the kernel (or a seccomp filter) says openat2 does not exist: resolution then
/// walks one component at a time with `O_NOFOLLOW`, which refuses the same paths.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Prefix and suffix of the temporary names files are written under.
const TEMP_PREFIX: &str = ".drydock-";
const TEMP_SUFFIX: &str = ".tmp";

/// A fresh random temporary name: `.drydock-<16 hex>.tmp`.
fn temp_name() -> String {
    format!("{TEMP_PREFIX}{:016x}{TEMP_SUFFIX}", rand::random::<u64>())
}

/// Whether `name` has the shape of a temporary name restore writes under (a leftover of an
/// interrupted restore, or one in progress).
pub fn is_temp_name(name: &str) -> bool {
    name.strip_prefix(TEMP_PREFIX)
        .and_then(|r| r.strip_suffix(TEMP_SUFFIX))
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A name must be exactly one path component: never empty, `.`, `..`, with `/` or NUL.
pub fn safe_name(name: &str) -> Result<&str> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(Error::Integrity(format!(
            "refusing the unsafe name {name:?}: a name must be one path component"
        )));
    }
    Ok(name)
}

/// The error for a failed operation on `shown`: a symlink (or an escape) on the way is a
/// refusal (exit 4), anything else an I/O error.
fn fail(what: &str, shown: &Path, e: Errno) -> Error {
    match e {
        Errno::LOOP | Errno::XDEV => Error::Refused(format!(
            "refusing to {what} {}: it or a directory on its way is a symlink, and restore \
             never follows a link below its target; remove the link or restore into an empty \
             directory",
            shown.display()
        )),
        e => Error::io(format!("cannot {what} {}", shown.display()), e.into()),
    }
}

/// Open `rel` below `dirfd`, never following a symlink and never leaving `dirfd`.
fn open_beneath(
    dirfd: BorrowedFd,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
) -> rustix::io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        // EAGAIN: a concurrent rename raced the lookup; the kernel asks to retry.
        for _ in 0..8 {
            match rfs::openat2(dirfd, rel, flags, mode, RESOLVE) {
                Err(Errno::AGAIN) => continue,
                Err(Errno::NOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    break;
                }
                r => return r,
            }
        }
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            return Err(Errno::AGAIN);
        }
    }
    open_walk(dirfd, rel, flags, mode)
}

/// openat2's guarantee without openat2: one plain component at a time, each opened with
/// `O_NOFOLLOW`, so a symlink anywhere on the way fails (ELOOP or ENOTDIR).
fn open_walk(
    dirfd: BorrowedFd,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
) -> rustix::io::Result<OwnedFd> {
    let mut names = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => names.push(n),
            Component::CurDir => {}
            _ => return Err(Errno::XDEV),
        }
    }
    let Some(last) = names.pop() else {
        return rfs::openat(dirfd, ".", flags | OFlags::NOFOLLOW, mode);
    };
    let mut cur: Option<OwnedFd> = None;
    for n in names {
        let at = cur.as_ref().map_or(dirfd, |f| f.as_fd());
        let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        cur = Some(rfs::openat(at, n, dir_flags, Mode::empty())?);
    }
    let at = cur.as_ref().map_or(dirfd, |f| f.as_fd());
    rfs::openat(at, last, flags | OFlags::NOFOLLOW, mode)
}

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY);

/// Open the directory `rel` below `dirfd`. The kernel reports a symlink in last place as
/// "not a directory" (O_DIRECTORY wins over O_NOFOLLOW); it is reported as the refused
/// link it is (ELOOP).
fn open_dir_beneath(dirfd: BorrowedFd, rel: &Path) -> rustix::io::Result<OwnedFd> {
    match open_beneath(dirfd, rel, DIR_FLAGS, Mode::empty()) {
        Err(Errno::NOTDIR) => {
            let link = open_beneath(dirfd, rel, OFlags::PATH, Mode::empty())
                .and_then(rfs::fstat)
                .is_ok_and(|st| rfs::FileType::from_raw_mode(st.st_mode).is_symlink());
            Err(if link { Errno::LOOP } else { Errno::NOTDIR })
        }
        r => r,
    }
}

/// Mode, owner and mtime to give a restored entry.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
}

impl Meta {
    fn times(&self) -> Timestamps {
        let t = rustix::fs::Timespec {
            tv_sec: self.mtime,
            tv_nsec: self.mtime_nsec.into(),
        };
        Timestamps {
            last_access: t,
            last_modification: t,
        }
    }

    /// Owner only when running as root (nobody else can give files away).
    fn owner(&self) -> Option<(rfs::Uid, rfs::Gid)> {
        // SAFETY: geteuid has no preconditions.
        (unsafe { libc::geteuid() } == 0)
            .then(|| (rfs::Uid::from_raw(self.uid), rfs::Gid::from_raw(self.gid)))
    }
}

/// Owner, then mode (a chown clears setuid and setgid), then mtime, all through `fd`.
pub fn set_meta(fd: impl AsFd, meta: &Meta, shown: &Path) -> Result<()> {
    let fd = fd.as_fd();
    if let Some((uid, gid)) = meta.owner() {
        rfs::fchown(fd, Some(uid), Some(gid)).map_err(|e| fail("set the owner of", shown, e))?;
    }
    rfs::fchmod(fd, Mode::from_raw_mode(meta.mode))
        .map_err(|e| fail("set the mode of", shown, e))?;
    rfs::futimens(fd, &meta.times()).map_err(|e| fail("set the mtime of", shown, e))
}

/// A restore target: the operator's directory, held open.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Create the target if needed and open it (the operator's path is followed normally).
    pub fn create(path: &Path) -> Result<Root> {
        std::fs::create_dir_all(path)
            .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
        let fd = rfs::open(path, DIR_FLAGS | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e.into()))?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// `rel` as the operator would name it, for messages.
    pub fn shown(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }

    fn open(&self, rel: &Path, flags: OFlags, mode: Mode) -> rustix::io::Result<OwnedFd> {
        open_beneath(self.fd.as_fd(), rel, flags, mode)
    }

    /// The existing directory `rel` ("" is the target).
    pub fn dir(&self, rel: &Path) -> Result<Dir<'_>> {
        let fd = open_dir_beneath(self.fd.as_fd(), rel)
            .map_err(|e| fail("open the directory", &self.shown(rel), e))?;
        Ok(Dir {
            root: self,
            rel: rel.to_path_buf(),
            fd,
        })
    }

    /// The directory `rel`, created with its parents as needed (mode 0777 less the umask);
    /// an existing symlink on the way is refused, never followed.
    pub fn create_dirs(&self, rel: &Path) -> Result<Dir<'_>> {
        let mut dir = self.dir(Path::new(""))?;
        for c in rel.components() {
            let Component::Normal(name) = c else {
                return Err(Error::Integrity(format!(
                    "refusing the path {}: a component is not a plain name",
                    rel.display()
                )));
            };
            let name = name.to_str().ok_or_else(|| {
                Error::Integrity(format!("refusing the path {}: not UTF-8", rel.display()))
            })?;
            dir = dir.make_dir(name, 0o777, false)?;
        }
        Ok(dir)
    }

    /// The existing regular file `rel`.
    pub fn open_file(&self, rel: &Path, flags: OFlags) -> Result<File> {
        self.open(rel, flags, Mode::empty())
            .map(File::from)
            .map_err(|e| fail("open", &self.shown(rel), e))
    }
}

/// A directory below a [`Root`], opened without following a symlink.
pub struct Dir<'r> {
    root: &'r Root,
    rel: PathBuf,
    fd: OwnedFd,
}

impl<'r> Dir<'r> {
    /// This directory, relative to the target.
    pub fn rel(&self) -> &Path {
        &self.rel
    }

    /// `name` in this directory, as the operator would name it.
    pub fn shown(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.root.shown(&self.rel.join(name.as_ref()))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn open_dir(&self, name: &str) -> rustix::io::Result<OwnedFd> {
        open_dir_beneath(self.fd.as_fd(), Path::new(name))
    }

    /// The subdirectory `name`, created with `mode` if missing. An existing symlink or
    /// file there is removed first when `replace`, and refused otherwise.
    pub fn make_dir(&self, name: &str, mode: u32, replace: bool) -> Result<Dir<'r>> {
        safe_name(name)?;
        let mkdir = || match rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(fail("create", &self.shown(name), e)),
        };
        mkdir()?;
        let fd = match self.open_dir(name) {
            Err(Errno::LOOP | Errno::NOTDIR) if replace => {
                self.remove(name)?;
                mkdir()?;
                self.open_dir(name)
            }
            r => r,
        }
        .map_err(|e| fail("create the directory", &self.shown(name), e))?;
        Ok(Dir {
            root: self.root,
            rel: self.rel.join(name),
            fd,
        })
    }

    /// A new, empty file under a fresh random name (never an existing entry, never through
    /// a link), mode 0600; its name and the file.
    pub fn create_temp(&self) -> Result<(String, File)> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
        let mode = Mode::from_raw_mode(0o600);
        let mut last = Errno::EXIST;
        // 64 random bits: a collision means someone is filling the directory with our names.
        for _ in 0..8 {
            let name = temp_name();
            match open_beneath(self.fd.as_fd(), Path::new(&name), flags, mode) {
                Ok(fd) => return Ok((name, File::from(fd))),
                Err(e) => last = e,
            }
            if last != Errno::EXIST {
                break;
            }
        }
        Err(fail("create a file in", &self.shown(""), last))
    }

    /// Set this directory's mode.
    pub fn set_mode(&self, mode: u32) -> Result<()> {
        rfs::fchmod(&self.fd, Mode::from_raw_mode(mode))
            .map_err(|e| fail("set the mode of", &self.shown(""), e))
    }

    /// Remove regular files with a temporary name (the leftovers of an interrupted restore)
    /// except those named in `keep` (a snapshot may hold a file of that shape).
    pub fn remove_leftover_temps(&self, keep: &HashSet<&str>) -> Result<()> {
        let list = |e| fail("list", &self.shown(""), e);
        let mut entries = rfs::Dir::read_from(&self.fd).map_err(list)?;
        let mut stale = Vec::new();
        while let Some(entry) = entries.read() {
            let entry = entry.map_err(list)?;
            if let Ok(name) = entry.file_name().to_str() {
                if is_temp_name(name) && !keep.contains(name) {
                    stale.push(name.to_string());
                }
            }
        }
        for name in stale {
            let st = rfs::statat(&self.fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW);
            if st.is_ok_and(|st| rfs::FileType::from_raw_mode(st.st_mode).is_file()) {
                rfs::unlinkat(&self.fd, name.as_str(), AtFlags::empty())
                    .map_err(|e| fail("remove", &self.shown(&name), e))?;
            }
        }
        Ok(())
    }

    /// Move `from` to `to`, both in this directory (`to` is replaced if it is a file or
    /// a symlink; a symlink is replaced, not followed).
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        safe_name(to)?;
        rfs::renameat(&self.fd, from, &self.fd, to)
            .map_err(|e| fail("move into place", &self.shown(to), e))
    }

    /// Remove `name` (recursively if a directory; a symlink itself, never what it points
    /// to). Missing is fine. Never removes this directory itself.
    pub fn remove(&self, name: &str) -> Result<()> {
        safe_name(name)?;
        remove_in(self.fd.as_fd(), name.as_ref(), &|n| self.shown(n))
    }

    /// Whether `name` exists and is a directory (not following a symlink).
    pub fn is_dir(&self, name: &str) -> Result<bool> {
        match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(fail("inspect", &self.shown(name), e)),
        }
    }

    /// A symlink `name` → `target`, with owner and mtime set on the link itself.
    pub fn symlink(&self, target: &str, name: &str, meta: &Meta) -> Result<()> {
        safe_name(name)?;
        let shown = self.shown(name);
        rfs::symlinkat(target, &self.fd, name)
            .map_err(|e| fail("create the symlink", &shown, e))?;
        if let Some((uid, gid)) = meta.owner() {
            rfs::chownat(
                &self.fd,
                name,
                Some(uid),
                Some(gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| fail("set the owner of", &shown, e))?;
        }
        rfs::utimensat(&self.fd, name, &meta.times(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| fail("set the mtime of", &shown, e))
    }

    /// Write `data` to `name` atomically: a temporary file, synced, renamed into place,
    /// and this directory synced.
    pub fn write_atomic(&self, name: &str, data: &[u8]) -> Result<()> {
        let (tmp, mut file) = self.create_temp()?;
        let r = file
            .write_all(data)
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::io(format!("cannot write {}", self.shown(name).display()), e))
            .and_then(|_| self.rename(&tmp, name));
        if r.is_err() {
            let _ = rfs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
        }
        r?;
        self.sync()
    }

    pub fn sync(&self) -> Result<()> {
        rfs::fsync(&self.fd).map_err(|e| fail("sync", &self.shown(""), e))
    }
}

/// Remove `name` in `dirfd`, recursively, through descriptors opened without following
/// links (names read from the directory are single components by construction).
fn remove_in(dirfd: BorrowedFd, name: &OsStr, shown: &dyn Fn(&OsStr) -> PathBuf) -> Result<()> {
    match rfs::unlinkat(dirfd, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(fail("remove", &shown(name), e)),
    }
    let fd = open_dir_beneath(dirfd, Path::new(name))
        .map_err(|e| fail("open the directory", &shown(name), e))?;
    let here = shown(name);
    // Names first, then removal: a directory is not changed while it is being read.
    let mut names: Vec<std::ffi::OsString> = Vec::new();
    let mut entries = rfs::Dir::read_from(&fd).map_err(|e| fail("list", &here, e))?;
    while let Some(entry) = entries.read() {
        let entry = entry.map_err(|e| fail("list", &here, e))?;
        let n: &CStr = entry.file_name();
        if n != c"." && n != c".." {
            names.push(OsStr::from_bytes(n.to_bytes()).to_os_string());
        }
    }
    // One descriptor per level while descending, not two.
    drop(entries);
    for n in &names {
        remove_in(fd.as_fd(), n, &|c| here.join(c))?;
    }
    rfs::unlinkat(dirfd, name, AtFlags::REMOVEDIR).map_err(|e| fail("remove", &here, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        let outside = dir.path().join("outside");
        fs::create_dir_all(t.join("real")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("f"), b"keep").unwrap();
        symlink(&outside, t.join("link")).unwrap();
        (dir, t, outside)
    }

    #[test]
    fn temp_names_have_their_shape() {
        let n = temp_name();
        assert!(is_temp_name(&n), "{n}");
        assert_ne!(n, temp_name());
        for other in [
            ".a.drydock-tmp",
            ".drydock-xyz.tmp",
            ".drydock-0123456789abcdef.tmpx",
        ] {
            assert!(!is_temp_name(other), "{other}");
        }
    }

    #[test]
    fn nothing_is_resolved_through_a_symlink() {
        let (_d, t, outside) = setup();
        let root = Root::create(&t).unwrap();
        assert!(root.dir(Path::new("real")).is_ok());
        for rel in ["link", "link/f", "../outside", "real/../link"] {
            let e = root.open_file(Path::new(rel), OFlags::RDONLY).err();
            assert!(
                matches!(e, Some(Error::Integrity(_) | Error::Refused(_))),
                "{rel}: {e:?}"
            );
        }
        let e = root.create_dirs(Path::new("link/sub")).err();
        assert!(
            matches!(e, Some(Error::Integrity(_) | Error::Refused(_))),
            "{e:?}"
        );
        assert!(!outside.join("sub").exists());
    }

    #[test]
    fn the_fallback_walk_refuses_symlinks_too() {
        let (_d, t, _) = setup();
        let root = Root::create(&t).unwrap();
        let walk = |rel: &str| open_walk(root.fd.as_fd(), Path::new(rel), DIR_FLAGS, Mode::empty());
        assert!(walk("real").is_ok());
        assert!(walk("").is_ok());
        for rel in ["link", "link/x", "../t", "/tmp"] {
            assert!(walk(rel).is_err(), "{rel}");
        }
    }

    #[test]
    fn remove_is_confined_and_never_follows() {
        let (_d, t, outside) = setup();
        fs::create_dir_all(t.join("real/deep/er")).unwrap();
        fs::write(t.join("real/deep/er/x"), b"x").unwrap();
        symlink(&outside, t.join("real/deep/out")).unwrap();
        let root = Root::create(&t).unwrap();
        let top = root.dir(Path::new("")).unwrap();
        top.remove("real").unwrap();
        top.remove("link").unwrap();
        top.remove("missing").unwrap();
        assert!(top.remove("..").is_err() && top.remove("").is_err());
        assert_eq!(fs::read_dir(&t).unwrap().count(), 0);
        assert_eq!(fs::read(outside.join("f")).unwrap(), b"keep");
    }

    #[test]
    fn make_dir_replaces_a_symlink_only_when_asked() {
        let (_d, t, outside) = setup();
        let root = Root::create(&t).unwrap();
        let top = root.dir(Path::new("")).unwrap();
        assert!(matches!(
            top.make_dir("link", 0o700, false),
            Err(Error::Integrity(_) | Error::Refused(_))
        ));
        let d = top.make_dir("link", 0o700, true).unwrap();
        assert_eq!(d.rel(), Path::new("link"));
        assert!(fs::symlink_metadata(t.join("link")).unwrap().is_dir());
        assert_eq!(fs::read(outside.join("f")).unwrap(), b"keep");
    }

    #[test]
    fn leftover_temps_are_removed_unless_kept() {
        let (_d, t, outside) = setup();
        let real = t.join("real");
        for n in [
            ".drydock-0123456789abcdef.tmp",
            ".drydock-fedcba9876543210.tmp",
            "a",
        ] {
            fs::write(real.join(n), b"x").unwrap();
        }
        fs::create_dir(real.join(".drydock-00000000000000aa.tmp")).unwrap();
        symlink(
            outside.join("f"),
            real.join(".drydock-00000000000000bb.tmp"),
        )
        .unwrap();
        let root = Root::create(&t).unwrap();
        let keep = HashSet::from([".drydock-fedcba9876543210.tmp"]);
        root.dir(Path::new("real"))
            .unwrap()
            .remove_leftover_temps(&keep)
            .unwrap();
        let mut left: Vec<String> = fs::read_dir(&real)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".drydock-00000000000000aa.tmp",
                ".drydock-00000000000000bb.tmp",
                ".drydock-fedcba9876543210.tmp",
                "a"
            ]
        );
        assert_eq!(fs::read(outside.join("f")).unwrap(), b"keep");
    }

    #[test]
    fn write_atomic_replaces_a_symlink_and_not_its_target() {
        let (_d, t, outside) = setup();
        symlink(outside.join("f"), t.join("real/name")).unwrap();
        let root = Root::create(&t).unwrap();
        let d = root.dir(Path::new("real")).unwrap();
        d.write_atomic("name", b"new").unwrap();
        assert_eq!(fs::read(t.join("real/name")).unwrap(), b"new");
        assert_eq!(fs::read(outside.join("f")).unwrap(), b"keep");
        assert_eq!(fs::read_dir(t.join("real")).unwrap().count(), 1);
    }
}
