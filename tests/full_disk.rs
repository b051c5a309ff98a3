//! Full disk (issue 7): a local-directory repository and a configuration restore target on
//! a small tmpfs. When the disk fills, drydock must fail with exit 1 and one error line that
//! says the disk is full and names the path, leave nothing half-written under a finished
//! name (every object still matches its SHA-256 name, every restored file matches the
//! source), record no snapshot, and succeed on the next run once there is room.
//!
//! Mounting needs root (as on the CI runners); elsewhere the tests say so and skip.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sha2::Digest as _;

/// Files (or registry blobs) of 200 KiB restored onto an 8 MiB disk: 16 MiB in all.
const FILES: u64 = 80;

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with a message) when this process may not mount.
    fn mount(mib: u64) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            if why.contains("permission denied") || why.contains("must be superuser") {
                println!("skipped: cannot mount a tmpfs here: {why}");
                return None;
            }
            panic!("mount -t tmpfs failed: {why}");
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, mib: u64) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(self.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn available(&self) -> u64 {
        // SAFETY: a zeroed statvfs is a valid out-parameter; the path is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let path = std::ffi::CString::new(self.path().as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds it open: detach it so the directory can go.
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
    }
}

/// Write incompressible bytes until the disk is full; returns the filler's path.
fn fill(dir: &Path, leave: u64, tmpfs: &Tmpfs) -> PathBuf {
    let filler = dir.join("filler");
    let n = tmpfs.available().saturating_sub(leave);
    fs::write(&filler, noise(n as usize, 99)).unwrap();
    filler
}

/// The one error line, which must say the disk is full and name a path under `under`.
#[track_caller]
fn assert_disk_full(r: &Run, under: &Path) {
    r.expect(1);
    let lines = r.error_lines();
    assert_eq!(lines.len(), 1, "want one error line, stderr: {}", r.stderr);
    let line = lines[0];
    assert!(
        line.contains("No space left on device"),
        "the error should say the disk is full: {line}"
    );
    assert!(
        line.contains(under.to_str().unwrap()),
        "the error should name the path under {}: {line}",
        under.display()
    );
    assert!(
        line.contains("free space"),
        "the error should say what to do: {line}"
    );
}

/// Every object under a finished name is whole: packs, index and snapshot objects are named
/// by the SHA-256 of their bytes. Returns (objects, temporary files).
#[track_caller]
fn assert_objects_whole(root: &Path) -> (usize, Vec<PathBuf>) {
    let mut objects = 0;
    let mut temps = Vec::new();
    for p in walk(root).into_iter().filter(|p| p.is_file()) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(".tmp-") {
            temps.push(p);
            continue;
        }
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if ["packs/", "index/", "snapshots/"]
            .iter()
            .any(|d| rel.starts_with(d))
        {
            let digest = hex::encode(sha2::Sha256::digest(fs::read(&p).unwrap()));
            assert_eq!(
                digest, name,
                "{rel} is not whole: its content does not match its name"
            );
        }
        objects += 1;
    }
    (objects, temps)
}

#[test]
fn backup_into_a_full_repository_disk_fails_cleanly_and_the_next_one_succeeds() {
    let Some(disk) = Tmpfs::mount(24) else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    // The repository on the small disk, the keys and the sources elsewhere.
    let root = disk.path().join("repo");
    let args = vec!["--repo".to_string(), root.to_str().unwrap().to_string()];
    let identity = keys.path().join("identity.txt");
    let backup_key = keys.path().join("backup.key");
    let mut init: Vec<&str> = args.iter().map(String::as_str).collect();
    init.extend([
        "init",
        "--identity-out",
        identity.to_str().unwrap(),
        "--backup-key-out",
        backup_key.to_str().unwrap(),
    ]);
    run(&init).expect(0);
    let repo = Repo {
        args,
        identity,
        backup_key,
        local_root: Some(root.clone()),
        s3: None,
    };
    let src = keys.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("harbor.yml"), "hostname: harbor.example.com\n").unwrap();
    fs::write(src.join("big.bin"), noise(40 << 20, 1)).unwrap();

    // 1. Not even the first pack fits: the repository is left exactly as it was.
    let filler = fill(disk.path(), 256 << 10, &disk);
    let files =
        |root: &Path| -> Vec<PathBuf> { walk(root).into_iter().filter(|p| p.is_file()).collect() };
    let before = files(&root);
    let r = repo.bk(&["backup", "--config", src.to_str().unwrap()]);
    assert_disk_full(&r, &root);
    assert_eq!(
        files(&root),
        before,
        "a backup that stored nothing left files behind"
    );
    fs::remove_file(&filler).unwrap();

    // 2. 40 MiB into 24 MiB: the first 16 MiB pack lands, the second does not fit (one
    // upload at a time, so the first is complete before the second starts).
    let started = std::time::Instant::now();
    let r = repo.bk(&[
        "backup",
        "--parallel",
        "1",
        "--config",
        src.to_str().unwrap(),
    ]);
    assert_disk_full(&r, &root);
    println!(
        "full disk after {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        r.error_lines()[0]
    );
    let (objects, temps) = assert_objects_whole(&root);
    assert!(temps.is_empty(), "temporary files left behind: {temps:?}");
    assert!(
        walk(&root.join("snapshots")).is_empty(),
        "a failed backup recorded a snapshot"
    );
    let listed = repo.id(&["--json", "snapshots"]);
    listed.expect(0);
    assert!(listed.json()["snapshots"].as_array().unwrap().is_empty());
    // What is there is a valid repository, readable in full, on the still-full disk.
    repo.id(&["check", "--read-data"]).expect(0);
    // How much landed depends on how far the pipeline got before the disk filled, which
    // the scheduler decides: what is asserted is that all of it is reused.
    let landed: u64 = walk(&root.join("packs"))
        .iter()
        .filter(|p| p.is_file())
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    println!("left after the failure: {objects} objects, all whole, {landed} bytes of packs");

    // 3. Room again: the next backup completes, reusing what the failed one stored.
    disk.resize(96);
    let r = repo.bk(&["--json", "backup", "--config", src.to_str().unwrap()]);
    r.expect(0);
    let s = r.json();
    println!(
        "after making room: stored {} bytes, reused {} bytes",
        s["summary"]["stored_bytes"], s["summary"]["reused_bytes"]
    );
    // Pack headers and per-blob framing are well under 1 MiB of the landed bytes.
    let reused = s["summary"]["reused_bytes"].as_u64().unwrap();
    assert!(
        reused + (1 << 20) >= landed,
        "the packs stored before the disk filled ({landed} bytes) should be reused, not {reused} bytes"
    );
    assert_objects_whole(&root);
    repo.id(&["check", "--read-data"]).expect(0);
    let out = keys.path().join("out");
    repo.id(&["restore", "latest", "--config-dir", out.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&src, &restored(&out, &src));
}

#[test]
fn restore_onto_a_full_disk_leaves_no_partial_file_and_a_rerun_completes() {
    let Some(disk) = Tmpfs::mount(8) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    // A configuration tree of 17 MiB: Harbor's files, a Secret volume, and many layers.
    let (etc, secret) = harbor_config_tree(&dir.path().join("src"), 1 << 20);
    // Files of one chunk each: a file's last write is its only one, and the one that meets
    // the full disk.
    let layers = etc.join("layers");
    fs::create_dir_all(&layers).unwrap();
    for i in 0..FILES {
        fs::write(layers.join(format!("{i:03}.bin")), noise(200 << 10, 10 + i)).unwrap();
    }
    repo.backup(&[&etc, &secret]);

    let out = disk.path().join("out");
    let r = repo.id(&["restore", "latest", "--config-dir", out.to_str().unwrap()]);
    assert_disk_full(&r, &out);
    println!("{}", r.error_lines()[0]);

    // Whatever is under a final name is the source's file, byte for byte; no temporary
    // file is left to hold the space.
    let (mut whole, mut temps) = (0, Vec::new());
    for p in walk(&out) {
        let meta = fs::symlink_metadata(&p).unwrap();
        if !meta.is_file() {
            continue;
        }
        if is_restore_temp(&p) {
            temps.push(p);
            continue;
        }
        let source = Path::new("/").join(p.strip_prefix(&out).unwrap());
        assert!(
            fs::read(&p).unwrap() == fs::read(&source).unwrap(),
            "{} was left with partial or wrong content",
            p.display()
        );
        whole += 1;
    }
    assert!(temps.is_empty(), "temporary files left behind: {temps:?}");
    println!("{whole} files restored whole before the disk filled");
    assert!(whole < FILES as usize, "the disk was supposed to fill up");

    // Room again: the same restore, over what is there, completes.
    disk.resize(96);
    repo.id(&["restore", "latest", "--config-dir", out.to_str().unwrap()])
        .expect_error(2, "--force");
    repo.id(&[
        "restore",
        "latest",
        "--force",
        "--config-dir",
        out.to_str().unwrap(),
    ])
    .expect(0);
    assert_same_tree(&etc, &restored(&out, &etc));
    assert_same_tree(&secret, &restored(&out, &secret));
}

#[test]
fn registry_restore_onto_a_full_disk_leaves_no_partial_blob_and_a_rerun_completes() {
    let Some(disk) = Tmpfs::mount(8) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let src = dir.path().join("registry");
    // Blobs of one chunk each, as for the configuration above.
    registry_tree_with_layers(&src, FILES, 200 << 10);
    repo.bk(&["backup", "--registry-fs", src.to_str().unwrap()])
        .expect(0);

    let out = disk.path().join("registry");
    let restore = || {
        repo.id(&[
            "restore",
            "latest",
            "--parallel",
            "2",
            "--registry-fs",
            out.to_str().unwrap(),
        ])
    };
    let r = restore();
    assert_disk_full(&r, &out);
    println!("{}", r.error_lines()[0]);
    // A blob under its final name has the bytes of its digest; nothing temporary is left.
    let mut whole = 0;
    for p in walk(&out).into_iter().filter(|p| p.is_file()) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".tmp-"),
            "temporary file left: {}",
            p.display()
        );
        let rel = p.strip_prefix(&out).unwrap();
        assert!(
            fs::read(&p).unwrap() == fs::read(src.join(rel)).unwrap(),
            "{} was left with partial or wrong content",
            rel.display()
        );
        whole += 1;
    }
    println!("{whole} registry files restored whole before the disk filled");
    assert!(whole < FILES as usize, "the disk was supposed to fill up");

    disk.resize(96);
    restore().expect(0);
    let files = |root: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        walk(root)
            .into_iter()
            .filter(|p| p.is_file())
            .map(|p| {
                (
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    fs::read(&p).unwrap(),
                )
            })
            .collect()
    };
    assert!(
        files(&src) == files(&out),
        "the rerun did not restore the registry exactly"
    );
}
