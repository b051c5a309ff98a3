//! Restore writes only beneath its target: snapshots forged with the backup-only key, and
//! targets holding planted symlinks, change nothing outside it (every file, mode and mtime
//! of the surrounding tree is compared), with and without --force.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::forge::{dir_node, file_node, forge, node, root};
use common::*;
use drydock::repo::tree::{Node, NodeKind};
use sha2::{Digest as _, Sha256};

/// A repository (with its keys) beside a "world": the restore target `world/out` and
/// everything around it that a restore must leave alone.
struct Setup {
    _dir: tempfile::TempDir,
    repo: Repo,
    world: PathBuf,
    out: PathBuf,
    outside: PathBuf,
    /// A file outside the target that forged snapshots aim at.
    victim: PathBuf,
}

const MARKER: &str = "pwned";

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    let repo = local_repo(&keys);
    let world = dir.path().join("world");
    let (out, outside) = (world.join("out"), world.join("outside"));
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::create_dir_all(&out).unwrap();
    let victim = outside.join("victim");
    fs::write(&victim, b"precious").unwrap();
    fs::write(outside.join("sub/other"), b"also precious").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o640)).unwrap();
    set_mtime(&victim, 1_600_000_000);
    set_mtime(&outside.join("sub"), 1_600_000_100);
    Setup {
        _dir: dir,
        repo,
        world,
        out,
        outside,
        victim,
    }
}

/// Kind, mode, owner, mtime and content (SHA-256, or link target) of every entry under
/// `root`, `root` included, skipping `skip` and what is below it (the target's own mtime
/// changes as it is written into).
fn fingerprint(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    std::iter::once(root.to_path_buf())
        .chain(walk(root))
        .filter(|p| !p.starts_with(skip))
        .map(|p| {
            let m = fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() {
                hex::encode(Sha256::digest(fs::read(&p).unwrap()))
            } else if m.file_type().is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else {
                String::new()
            };
            let shown = format!(
                "{:o} {}:{} {}.{} {content}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec()
            );
            (p, shown)
        })
        .collect()
}

impl Setup {
    fn around(&self) -> BTreeMap<PathBuf, String> {
        fingerprint(&self.world, &self.out)
    }

    fn restore(&self, force: bool) -> Run {
        let mut args = vec![
            "restore",
            "latest",
            "--config-dir",
            self.out.to_str().unwrap(),
        ];
        if force {
            args.push("--force");
        }
        self.repo.id(&args)
    }

    /// Nothing around the target changed since `before`, and no payload marker exists.
    #[track_caller]
    fn untouched(&self, before: &BTreeMap<PathBuf, String>) {
        assert_eq!(
            &self.around(),
            before,
            "restore changed the tree around its target"
        );
        let markers: Vec<PathBuf> = walk(&self.world)
            .into_iter()
            .filter(|p| !p.starts_with(&self.out))
            .filter(|p| p.file_name().unwrap().to_string_lossy().contains(MARKER))
            .collect();
        assert!(markers.is_empty(), "payload markers: {markers:?}");
        let temps: Vec<PathBuf> = walk(&self.world)
            .into_iter()
            .filter(|p| is_restore_temp(p))
            .collect();
        assert!(temps.is_empty(), "temporary files left: {temps:?}");
    }
}

fn link_node(name: &str, target: &Path) -> Node {
    let mut n = node(name, NodeKind::Symlink);
    n.target = Some(target.to_str().unwrap().to_string());
    n
}

/// The directory that would be made 06777 with mtime 1970 through the link.
fn setuid_dir(name: &str) -> Node {
    Node {
        mode: 0o6777,
        mtime: 0,
        ..node(name, NodeKind::Dir)
    }
}

#[test]
fn a_directory_root_at_a_symlinks_path_changes_nothing_outside() {
    let s = setup();
    let victim = s.victim.clone();
    forge(&s.repo, move |w| {
        vec![
            root("/x", dir_node(w, "x", vec![link_node("link", &victim)])),
            root("/x/link", setuid_dir("link")),
        ]
    });
    let before = s.around();
    for force in [false, true] {
        s.restore(force).expect_error(4, "overlap");
        s.untouched(&before);
    }

    // The same in two snapshots: the first plants the link, the second is the directory.
    let victim = s.victim.clone();
    forge(&s.repo, move |w| {
        vec![root(
            "/x",
            dir_node(w, "x", vec![link_node("link", &victim)]),
        )]
    });
    s.restore(false).expect(0);
    assert!(fs::symlink_metadata(s.out.join("x/link"))
        .unwrap()
        .file_type()
        .is_symlink());
    forge(&s.repo, |_| vec![root("/x/link", setuid_dir("link"))]);
    s.restore(false).expect_error(2, "--force");
    s.untouched(&before);
    // With --force the link itself is replaced by the directory, never followed.
    s.restore(true).expect(0);
    s.untouched(&before);
    let m = fs::symlink_metadata(s.out.join("x/link")).unwrap();
    assert!(m.is_dir(), "the link was not replaced");
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o6777, 0));
}

#[test]
fn a_root_of_slash_is_refused_and_never_removes_the_target() {
    let s = setup();
    forge(&s.repo, |w| {
        vec![root(
            "/",
            dir_node(w, "/", vec![file_node(w, MARKER, b"x")]),
        )]
    });
    let before = s.around();
    s.restore(false)
        .expect_error(4, "names the restore target itself");
    s.untouched(&before);
    fs::write(s.out.join("keep"), b"operator's").unwrap();
    let whole = fingerprint(&s.world, Path::new("/nonexistent"));
    s.restore(true)
        .expect_error(4, "names the restore target itself");
    assert_eq!(fingerprint(&s.world, Path::new("/nonexistent")), whole);
    s.untouched(&before);
}

#[test]
fn the_old_temporary_name_planted_as_a_symlink_is_only_a_name() {
    let s = setup();
    let victim = s.victim.clone();
    forge(&s.repo, move |w| {
        vec![root(
            "/d",
            dir_node(
                w,
                "d",
                vec![
                    file_node(w, "a", b"the snapshot's a"),
                    link_node(".a.drydock-tmp", &victim),
                ],
            ),
        )]
    });
    let before = s.around();
    for _ in 0..2 {
        s.restore(true).expect(0);
        s.untouched(&before);
        assert_eq!(fs::read(s.out.join("d/a")).unwrap(), b"the snapshot's a");
        assert_eq!(
            fs::read_link(s.out.join("d/.a.drydock-tmp")).unwrap(),
            s.victim
        );
    }
}

#[test]
fn force_replaces_planted_symlinks_and_refuses_one_on_the_way() {
    let s = setup();
    // A real source, backed up normally.
    let src = s.world.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/f"), noise(3000, 1)).unwrap();
    fs::write(src.join("g"), b"g").unwrap();
    symlink("sub/f", src.join("s")).unwrap();
    set_mtime(&src.join("sub"), 1_650_000_000);
    set_mtime(&src, 1_650_000_100);
    s.repo.backup(&[&src]);
    let dest = restored(&s.out, &src);

    // The root itself, a directory and a file of the snapshot are symlinks out.
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    symlink(&s.outside, &dest).unwrap();
    let before = s.around();
    s.restore(true).expect(0);
    s.untouched(&before);
    assert_same_tree(&src, &dest);
    for (name, to) in [
        ("sub", &s.outside.join("sub")),
        ("g", &s.victim),
        ("s", &s.victim),
    ] {
        fs::remove_file(dest.join(name))
            .or_else(|_| fs::remove_dir_all(dest.join(name)))
            .unwrap();
        symlink(to, dest.join(name)).unwrap();
    }
    s.restore(true).expect(0);
    s.untouched(&before);
    assert_same_tree(&src, &dest);

    // A directory on the way to a root (not in the snapshot) is a symlink: refused.
    let first = s.out.join(src.components().nth(1).unwrap());
    fs::remove_dir_all(&first).unwrap();
    symlink(&s.outside, &first).unwrap();
    s.restore(true).expect_error(4, "is a symlink");
    s.untouched(&before);
}

#[test]
fn a_name_beside_its_old_temporary_name_restores_byte_identically() {
    let s = setup();
    let src = s.world.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), noise(200_000, 1)).unwrap();
    fs::write(src.join(".a.drydock-tmp"), noise(150_000, 2)).unwrap();
    // A legitimate file that looks like one of today's temporary names.
    fs::write(src.join(".drydock-0123456789abcdef.tmp"), b"mine").unwrap();
    set_mtime(&src.join("a"), 1_650_000_000);
    set_mtime(&src.join(".a.drydock-tmp"), 1_650_000_100);
    set_mtime(&src, 1_650_000_200);
    s.repo.backup(&[&src]);
    s.restore(false).expect(0);
    assert_same_tree(&src, &restored(&s.out, &src));
    s.restore(true).expect(0);
    assert_same_tree(&src, &restored(&s.out, &src));
}

/// A registry storage directory with one blob and a link to it; the blob's hex digest.
fn registry_source(root: &Path) -> String {
    let data = noise(5000, 9);
    let hex = hex::encode(Sha256::digest(&data));
    let v2 = root.join("docker/registry/v2");
    let blob = v2.join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
    fs::create_dir_all(&blob).unwrap();
    fs::write(blob.join("data"), &data).unwrap();
    let link = v2.join(format!("repositories/lib/app/_layers/sha256/{hex}"));
    fs::create_dir_all(&link).unwrap();
    fs::write(link.join("link"), format!("sha256:{hex}")).unwrap();
    hex
}

#[test]
fn a_registry_target_with_planted_symlinks_is_refused() {
    let s = setup();
    let src = s.world.join("registry");
    let hex = registry_source(&src);
    s.repo
        .bk(&["backup", "--registry-fs", src.to_str().unwrap()])
        .expect(0);
    let v2 = s.out.join("docker/registry/v2");
    let restore = || {
        s.repo.id(&[
            "restore",
            "latest",
            "--registry-fs",
            s.out.to_str().unwrap(),
        ])
    };

    // The blob's directory, then the repository's, are symlinks out.
    let planted = [
        v2.join(format!("blobs/sha256/{}", &hex[..2])),
        v2.join("repositories/lib"),
    ];
    let before = s.around();
    for p in &planted {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(&s.outside, p).unwrap();
        restore().expect_error(4, "is a symlink");
        s.untouched(&before);
        fs::remove_file(p).unwrap();
    }
    restore().expect(0);
    s.untouched(&before);
    for rel in [
        format!("blobs/sha256/{}/{hex}/data", &hex[..2]),
        format!("repositories/lib/app/_layers/sha256/{hex}/link"),
    ] {
        let from = src.join("docker/registry/v2").join(&rel);
        assert_eq!(
            fs::read(v2.join(&rel)).unwrap(),
            fs::read(from).unwrap(),
            "{rel}"
        );
    }
}

#[test]
fn backup_refuses_config_paths_a_restore_would_refuse() {
    let s = setup();
    let src = s.world.join("src");
    fs::create_dir_all(src.join("a")).unwrap();
    let repo_root = s.repo.local_root.clone().unwrap();
    let before = repo_files(&repo_root);
    s.repo
        .bk(&["backup", "--config", "/"])
        .expect_error(2, "--config /");
    let (whole, inner) = (src.to_str().unwrap(), src.join("a"));
    s.repo
        .bk(&[
            "backup",
            "--config",
            inner.to_str().unwrap(),
            "--config",
            whole,
        ])
        .expect_error(2, "overlap");
    assert_eq!(
        repo_files(&repo_root),
        before,
        "a refused backup wrote to the repository"
    );
}
