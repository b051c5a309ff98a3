//! Hostile input other than paths and SQL, forged as an attacker with only the backup-only
//! key would: lengths that would size huge allocations, escape sequences in names and
//! hosts; and the operator's side of it: key files that must not leak, core dumps, and
//! credentials or data sent in the clear.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::forge::{dir_node, file_node, forge_with, node, root};
use common::*;
use drydock::crypto;
use drydock::repo::blob::{BlobType, EncodedBlob};
use drydock::repo::tree::NodeKind;

const ESC_HOST: &str = "evil\x1b[2J\x1b]0;pwned\x07";
const ESC_NAME: &str = "\x1b[31mred\x07.conf";

/// Peak resident memory, in MiB, that a command refusing a forged 4 GiB blob may use.
const MAX_RSS_MIB: i64 = 200;

/// Run `cmd` to the end and return its run and its peak RSS in MiB (from wait4's rusage of
/// that very child, not of every child of the test).
#[allow(clippy::zombie_processes)] // reaped by wait4, which clippy cannot see
fn run_measured(mut cmd: Command) -> (Run, i64) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let mut stderr = String::new();
    err.read_to_string(&mut stderr).unwrap();
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: waiting for our own child, with valid out-pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let run = Run {
        code,
        stdout: stdout.join().unwrap(),
        stderr,
    };
    (run, usage.ru_maxrss / 1024)
}

/// One zstd frame of `n` zero bytes: ~130 KiB that expand to `n`.
fn zstd_bomb(n: u64) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(zeros.len() as u64) as usize;
        enc.write_all(&zeros[..k]).unwrap();
        left -= k as u64;
    }
    enc.finish().unwrap()
}

/// A snapshot whose one file is a single data blob claiming `u32::MAX` bytes (4 GiB − 1)
/// in its pack header and index entry; `stored` makes its stored bytes.
fn forge_huge_file(repo: &Repo, stored: fn(&crypto::Recipient) -> Vec<u8>) {
    forge_with(
        repo,
        "attacker",
        &[],
        |r| {
            let bytes = stored(&r.keys.recipient);
            vec![EncodedBlob {
                blob_type: BlobType::Data,
                id: r.keys.chunk_key("test").unwrap().blob_id(0, b"bomb"),
                raw_length: u32::MAX,
                bytes,
                lookup: None,
            }]
        },
        |w, raw| {
            let mut file = node("bomb", NodeKind::File);
            file.content = raw;
            file.size = u32::MAX as u64;
            vec![root("/etc", dir_node(w, "etc", vec![file]))]
        },
    );
}

fn assert_refused_small(repo: &Repo, args: &[&str], what: &str) {
    let (r, rss) = run_measured(repo.command_with(&repo.identity, args));
    eprintln!("{what}: exit {}, peak RSS {rss} MiB", r.code);
    r.expect(4);
    assert_eq!(r.error_lines().len(), 1, "{}", r.stderr);
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("more than a Data blob can hold"),
        "{what}: {}{}",
        r.stdout,
        r.stderr
    );
    assert!(
        rss < MAX_RSS_MIB,
        "{what}: peak RSS {rss} MiB refusing a 4 GiB blob (limit {MAX_RSS_MIB} MiB)"
    );
}

#[test]
fn a_blob_claiming_4_gib_is_refused_before_anything_is_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    // A real zstd bomb: a small frame that would expand to the 4 GiB its entry claims.
    forge_huge_file(&repo, |recipient| {
        let mut framed = vec![1u8];
        framed.extend(zstd_bomb(u32::MAX as u64));
        crypto::encrypt(recipient, &framed)
    });
    assert_refused_small(&repo, &["check", "--read-data"], "check --read-data");
    let out = dir.path().join("out");
    let target = out.to_str().unwrap();
    assert_refused_small(
        &repo,
        &["restore", "latest", "--config-dir", target],
        "restore",
    );
    assert!(walk(&out).iter().all(|p| !p.is_file()), "{:?}", walk(&out));
    let drill_args = ["drill", "latest", "--config-dir", target];
    let (r, rss) = run_measured(repo.command_with(&repo.identity, &drill_args));
    assert_ne!(r.code, 0, "a drill of a forged snapshot must not pass");
    assert!(!r.stdout.contains("PASSED"), "{}", r.stdout);
    assert!(rss < MAX_RSS_MIB, "drill: peak RSS {rss} MiB");
}

#[test]
fn escape_sequences_from_a_snapshot_never_reach_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    forge_with(
        &repo,
        ESC_HOST,
        &[("k\x1b[1m", "v\u{9b}2J\u{202e}")],
        |_| Vec::new(),
        |w, _| {
            let f = file_node(w, ESC_NAME, b"x");
            let mut link = node("link\x1b]0;t\x07", NodeKind::Symlink);
            link.target = Some("\x1b[2Jtarget".into());
            vec![root("/etc", dir_node(w, "etc", vec![f, link]))]
        },
    );
    let out = dir.path().join("out");
    let runs = [
        repo.id(&["snapshots"]),
        repo.id(&["show", "latest"]),
        repo.id(&[
            "restore",
            "latest",
            "--dry-run",
            "--config-dir",
            out.to_str().unwrap(),
        ]),
    ];
    for r in &runs {
        r.expect(0);
        for raw in ["\x1b", "\x07", "\u{9b}", "\u{202e}"] {
            assert!(
                !r.stdout.contains(raw) && !r.stderr.contains(raw),
                "raw {raw:?} in output:\n{}{}",
                r.stdout,
                r.stderr
            );
        }
    }
    let escaped_host = "evil\\x1b[2J\\x1b]0;pwned\\x07";
    assert!(runs[0].stdout.contains(escaped_host), "{}", runs[0].stdout);
    assert!(runs[0].stdout.contains("k\\x1b[1m=v\\u{9b}2J\\u{202e}"));
    let show = &runs[1].stdout;
    for want in [
        escaped_host,
        "\\x1b[31mred\\x07.conf",
        "link\\x1b]0;t\\x07",
        "-> \\x1b[2Jtarget",
    ] {
        assert!(show.contains(want), "show lacks {want:?}:\n{show}");
    }
    assert!(runs[2].stdout.contains("\\x1b[31mred\\x07.conf"));
    // JSON output carries the exact value, for programs.
    let json = repo.id(&["--json", "snapshots"]).json();
    assert_eq!(json["snapshots"][0]["host"], ESC_HOST);
}

#[test]
fn an_error_quoting_a_forged_name_is_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    forge_with(
        &repo,
        "attacker",
        &[],
        |_| Vec::new(),
        |w, _| {
            // Its size disagrees with its chunks: restore names the file in its error.
            let mut bad = file_node(w, "\x1b[2Jbad", b"x");
            bad.size = 5;
            vec![root("/etc", dir_node(w, "etc", vec![bad]))]
        },
    );
    let out = dir.path().join("out");
    let r = repo.id(&["restore", "latest", "--config-dir", out.to_str().unwrap()]);
    r.expect(4);
    assert!(!r.stderr.contains('\x1b'), "{:?}", r.stderr);
    assert!(r.stderr.contains("\\x1b[2Jbad"), "{}", r.stderr);
}

/// The backup-only key's JSON line and the hex of its chunk key.
fn backup_key_json(repo: &Repo) -> (serde_json::Value, String) {
    let text = fs::read_to_string(&repo.backup_key).unwrap();
    let line = text.lines().find(|l| l.starts_with('{')).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let hex = v["chunk_key"].as_str().unwrap().to_string();
    (v, hex)
}

fn write_key(path: &Path, v: &serde_json::Value) {
    let _ = fs::remove_file(path);
    crypto::write_secret_file(path, &format!("# broken on purpose\n{v}\n")).unwrap();
}

#[test]
fn key_file_errors_never_print_the_chunk_key() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let (good, hex) = backup_key_json(&repo);
    let broken = dir.path().join("broken.key");
    let mut cases = Vec::new();
    // The chunk key is valid, other fields are not.
    for (field, value) in [
        ("recipient", serde_json::json!("age1broken")),
        ("repository", serde_json::json!(format!("{hex}00"))),
        ("version", serde_json::json!(hex.clone())),
        ("type", serde_json::json!(hex.clone())),
    ] {
        let mut v = good.clone();
        v[field] = value;
        cases.push(v);
    }
    // The chunk key itself is malformed.
    for value in [
        serde_json::json!(&hex[..62]),
        serde_json::json!(format!("{}zz", &hex[..62])),
        serde_json::json!([hex.clone()]),
        serde_json::json!(format!("{hex}{hex}")),
    ] {
        let mut v = good.clone();
        v["chunk_key"] = value;
        cases.push(v);
    }
    for v in &cases {
        write_key(&broken, v);
        let r = repo.with_key(&broken, &["snapshots"]);
        r.expect_error(5, "invalid key file");
        let all = format!("{}{}", r.stdout, r.stderr);
        for i in 0..hex.len() - 8 {
            assert!(
                !all.contains(&hex[i..i + 8]),
                "output quotes the chunk key: {all}"
            );
        }
        assert!(!all.contains("age1broken"), "{all}");
    }
    // Not JSON at all, around the key: the column is given, not the text.
    let text = fs::read_to_string(&repo.backup_key)
        .unwrap()
        .replace("\"chunk_key\"", "chunk_key");
    let _ = fs::remove_file(&broken);
    crypto::write_secret_file(&broken, &text).unwrap();
    let r = repo.with_key(&broken, &["snapshots"]);
    r.expect_error(5, "not valid JSON (at column");
    assert!(!r.stderr.contains(&hex[..8]), "{}", r.stderr);
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), None).unwrap();
}

#[test]
fn an_identity_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let id = repo.identity.clone();
    let chmod_hint = format!("chmod 600 {}", id.display());
    for mode in [0o644, 0o604, 0o660] {
        chmod(&id, mode);
        repo.id(&["snapshots"])
            .expect_error(5, &chmod_hint)
            .expect_error(5, &format!("mode {mode:04o}"));
    }
    chmod(&id, 0o600);
    repo.id(&["snapshots"]).expect(0);
    // Root-owned and group-readable is a Kubernetes Secret volume with fsGroup.
    if std::os::unix::fs::MetadataExt::uid(&fs::metadata(&id).unwrap()) == 0 {
        chmod(&id, 0o440);
        repo.id(&["snapshots"]).expect(0);
        // Owned by another user (as on a workstation), group-readable: refused.
        chown(&id, 12345);
        repo.id(&["snapshots"]).expect_error(5, &chmod_hint);
        chmod(&id, 0o400);
        repo.id(&["snapshots"]).expect(0);
    }
    // Through the ..data symlinks of a Secret volume: the file behind them is checked.
    let link = dir.path().join("identity-link");
    std::os::unix::fs::symlink(&id, &link).unwrap();
    chmod(&id, 0o644);
    repo.with_key(&link, &["snapshots"])
        .expect_error(5, "chmod 600");
}

#[test]
fn a_backup_only_key_others_can_read_is_only_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let bk = repo.backup_key.clone();
    // As a Kubernetes Secret volume without fsGroup mounts it for a non-root pod.
    chmod(&bk, 0o444);
    let r = repo.with_key(&bk, &["check"]);
    r.expect(0);
    assert!(!r.stderr.contains("chmod"), "{}", r.stderr);
    chown(&bk, 12345);
    chmod(&bk, 0o644);
    let r = repo.with_key(&bk, &["check"]);
    r.expect(0);
    assert!(
        r.stderr.contains(&format!("chmod 600 {}", bk.display())),
        "{}",
        r.stderr
    );
}

#[test]
fn a_running_drydock_has_core_dumps_off() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let fifo = dir.path().join("key.fifo");
    let made = Command::new("mkfifo")
        .args(["-m", "600"])
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let child = repo.spawn_with(&fifo, &["snapshots"]);
    // Opening the FIFO returns once drydock opened it to read its key: main() has run.
    let mut w = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let limits = fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "0"],
        "{core}"
    );
    w.write_all(fs::read_to_string(&repo.identity).unwrap().as_bytes())
        .unwrap();
    drop(w);
    wait(child).expect(0);
}

#[test]
fn harbor_credentials_never_go_over_plain_http_to_another_host() {
    let pw = [("HARBOR_PASSWORD", "secret")];
    // 0.0.0.0 is not loopback by the rule, and refuses at once when allowed through.
    for url in ["http://harbor.example.com", "http://0.0.0.0:1"] {
        run_env(&["harbor", "read-only", "on", "--harbor-url", url], &pw)
            .expect_error(2, "--harbor-allow-http")
            .expect_error(2, "use https://");
    }
    let r = run_env(
        &[
            "harbor",
            "read-only",
            "on",
            "--harbor-allow-http",
            "--harbor-url",
            "http://0.0.0.0:1",
        ],
        &pw,
    );
    r.expect_error(1, "cannot reach Harbor");
    // A backup refuses before it reads anything or writes a snapshot.
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("harbor.yml"), "hostname: x\n").unwrap();
    let r = repo.with_key_env(
        &repo.backup_key,
        &[
            "backup",
            "--harbor-url",
            "http://harbor-core",
            "--config",
            src.to_str().unwrap(),
        ],
        &pw,
    );
    r.expect_error(2, "--harbor-allow-http");
    let listing = repo.id(&["--json", "snapshots"]).json();
    assert_eq!(listing["snapshots"].as_array().unwrap().len(), 0);
}

#[test]
fn a_plain_http_s3_endpoint_to_another_host_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let key = local_repo(dir.path()).backup_key;
    let key = key.to_str().unwrap();
    let s3 = |endpoint: &str| {
        run(&[
            "--repo",
            "s3://bucket/x",
            "--s3-endpoint",
            endpoint,
            "--key",
            key,
            "check",
        ])
    };
    let warned = |r: &Run, endpoint: &str| {
        r.stderr.lines().any(|l| {
            l.contains("WARN") && l.contains(&format!("S3 endpoint {endpoint} is plain http://"))
        })
    };
    let r = s3("http://0.0.0.0:1");
    assert!(warned(&r, "http://0.0.0.0:1"), "{}", r.stderr);
    for quiet in [
        "http://127.0.0.1:1",
        "http://localhost:1",
        "https://0.0.0.0:1",
    ] {
        let r = s3(quiet);
        assert!(!r.stderr.contains("plain http://"), "{quiet}: {}", r.stderr);
    }
    // The same for a Velero BackupStorageLocation's s3Url.
    let bsl = dir.path().join("bsl.yaml");
    fs::write(
        &bsl,
        "apiVersion: velero.io/v1\nkind: BackupStorageLocation\nmetadata:\n  name: default\n  namespace: velero\nspec:\n  provider: aws\n  objectStorage:\n    bucket: bucket\n    prefix: cluster\n  config:\n    region: us-east-1\n    s3Url: http://0.0.0.0:1\n    s3ForcePathStyle: \"true\"\n",
    )
    .unwrap();
    let r = run(&["--velero-bsl", bsl.to_str().unwrap(), "--key", key, "check"]);
    assert!(warned(&r, "http://0.0.0.0:1"), "{}", r.stderr);
}
