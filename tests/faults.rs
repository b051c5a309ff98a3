//! S3 faults: a proxy between drydock and the S3 server answers a share of the requests with
//! 500 InternalError, 503 SlowDown, connection resets (before the request is forwarded,
//! half-way through a response body, or after the server applied the request) and delays
//! (tests/common/faultproxy.rs). At 10% every command completes and the data is intact; at
//! 100% every command fails with one clear error, in bounded time, and the repository stays
//! valid.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::faultproxy::{self, proxied_s3_repo, seed, Counts, Fault, FaultProxy};
use common::*;

/// A source tree of `files` incompressible files of `size` bytes, with fixed mtimes.
fn source(dir: &Path, name: &str, files: usize, size: usize, seed: u64) -> PathBuf {
    let root = dir.join(name);
    fs::create_dir_all(&root).unwrap();
    for i in 0..files {
        let f = root.join(format!("layer-{i}.bin"));
        fs::write(&f, noise(size, seed * 100 + i as u64)).unwrap();
        set_mtime(&f, 1_700_000_000 + i as i64);
    }
    set_mtime(&root, 1_700_100_000);
    root
}

/// The attempts drydock makes by default. `common::command` sets 3, which at 10% faults
/// leaves a request failing all of its attempts once in ~2000: too often for a suite.
const PATIENT: &[(&str, &str)] = &[("DRYDOCK_S3_MAX_ATTEMPTS", "8")];

/// With the identity, default S3 attempts.
fn id(repo: &Repo, args: &[&str]) -> Run {
    repo.with_key_env(&repo.identity, args, PATIENT)
}

/// With the backup-only key, default S3 attempts.
fn bk(repo: &Repo, args: &[&str]) -> Run {
    repo.with_key_env(&repo.backup_key, args, PATIENT)
}

fn snapshot_ids(repo: &Repo) -> Vec<String> {
    let r = id(repo, &["--json", "snapshots"]);
    r.expect(0);
    r.json()["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["short_id"].as_str().unwrap().to_string())
        .collect()
}

/// Restore snapshot `id` into a fresh directory and compare it with its `sources`.
#[track_caller]
fn restore_and_compare(repo: &Repo, dir: &Path, id: &str, sources: &[&Path]) {
    let target = dir.join(format!("restore-{id}-{}", rand_suffix()));
    self::id(
        repo,
        &["restore", id, "--config-dir", target.to_str().unwrap()],
    )
    .expect(0);
    for source in sources {
        assert_same_tree(source, &restored(&target, source));
    }
    fs::remove_dir_all(&target).unwrap();
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn report(proxy: &FaultProxy, what: &str, before: &Counts) {
    println!("{what}: {}", proxy.counts().since(before));
}

#[test]
fn backup_restore_check_and_prune_complete_at_ten_percent_faults() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start(0.10, seed());
    let c0 = proxy.counts();
    let repo = proxied_s3_repo(dir.path(), "repo", &proxy);
    report(&proxy, "init", &c0);

    // X: a Harbor configuration tree with a 40 MiB file, several packs (the file is larger
    // than the 32 MiB multipart threshold, but goes up as chunks in packs of at most about
    // 24 MiB: a repository object never reaches it; the registry test covers multipart).
    // Y: three more files, new packs.
    let (etc, secret) = harbor_config_tree(&dir.path().join("x"), 40 << 20);
    let y = source(dir.path(), "y", 3, 5 << 20, 2);

    // X twice: the second backup finds everything already stored.
    let x_args = [
        "--json",
        "backup",
        "--config",
        etc.to_str().unwrap(),
        "--config",
        secret.to_str().unwrap(),
    ];
    let c = proxy.counts();
    bk(&repo, &x_args).expect(0);
    let again = bk(&repo, &x_args);
    again.expect(0);
    // Only sealed small files (salted anew by every backup, FORMAT.md §5) and the trees
    // naming them are stored again.
    let new_bytes = again.json()["summary"]["new_bytes"].as_u64().unwrap();
    assert!(new_bytes < 1 << 20, "{}", again.stdout);
    report(&proxy, "backup x twice", &c);
    let c = proxy.counts();
    bk(&repo, &["backup", "--config", y.to_str().unwrap()]).expect(0);
    report(&proxy, "backup y", &c);

    let c = proxy.counts();
    let ids = snapshot_ids(&repo);
    assert_eq!(ids.len(), 3, "{ids:?}");
    id(&repo, &["show", "latest"]).expect(0);
    id(&repo, &["check"]).expect(0);
    report(&proxy, "snapshots, show, check", &c);
    let c = proxy.counts();
    restore_and_compare(&repo, dir.path(), &ids[0], &[&etc, &secret]);
    restore_and_compare(&repo, dir.path(), &ids[1], &[&etc, &secret]);
    restore_and_compare(&repo, dir.path(), &ids[2], &[&y]);
    report(&proxy, "restore", &c);

    let c = proxy.counts();
    id(&repo, &["check", "--read-data"]).expect(0);
    report(&proxy, "check --read-data", &c);

    // Forget both X snapshots; the first prune marks X's packs, the second deletes them.
    let c = proxy.counts();
    id(&repo, &["forget", "--keep-last", "1"]).expect(0);
    let p1 = id(&repo, &["--json", "prune", "--safety-delay", "0s"]);
    p1.expect(0);
    assert!(p1.json()["marked"].as_u64().unwrap() >= 1, "{}", p1.stdout);
    let p2 = id(&repo, &["--json", "prune", "--safety-delay", "0s"]);
    p2.expect(0);
    assert!(
        p2.json()["deleted_packs"].as_u64().unwrap() >= 1,
        "{}",
        p2.stdout
    );
    report(&proxy, "forget + prune", &c);

    let c = proxy.counts();
    id(&repo, &["check", "--read-data"]).expect(0);
    assert_eq!(snapshot_ids(&repo), vec![ids[2].clone()]);
    restore_and_compare(&repo, dir.path(), &ids[2], &[&y]);
    report(&proxy, "check + restore after prune", &c);

    let total = proxy.counts();
    println!("total: {total}; {:?}", started.elapsed());
    for kind in Fault::ALL {
        assert!(total.of(kind) > 0, "no {kind:?} injected: {total}");
    }
}

const FEW_ATTEMPTS: &[(&str, &str)] = &[("DRYDOCK_S3_MAX_ATTEMPTS", "2")];

/// Run with the identity (`identity`) or the backup-only key, S3 attempts limited to 2.
fn timed(repo: &Repo, identity: bool, args: &[&str]) -> (Run, Duration) {
    let key = if identity {
        &repo.identity
    } else {
        &repo.backup_key
    };
    let t = Instant::now();
    let r = repo.with_key_env(key, args, FEW_ATTEMPTS);
    (r, t.elapsed())
}

/// Exit 1, one error line that names the S3 object or endpoint, no panic, in bounded time.
#[track_caller]
fn fails_clearly(what: &str, (r, took): &(Run, Duration)) -> String {
    println!(
        "{what}: exit {} after {took:?}: {}",
        r.code,
        r.stderr.trim()
    );
    assert_eq!(r.code, 1, "{what}: exit code\n{}", r.stderr);
    let lines = r.error_lines();
    assert_eq!(lines.len(), 1, "{what}: want one error line\n{}", r.stderr);
    assert!(
        lines[0].contains("s3://") || lines[0].contains("S3"),
        "{what}: the error should name the S3 object or endpoint: {}",
        lines[0]
    );
    assert!(
        !r.stderr.contains("panicked") && !r.stderr.contains("RUST_BACKTRACE"),
        "{what}: panic\n{}",
        r.stderr
    );
    assert!(*took < Duration::from_secs(30), "{what}: took {took:?}");
    lines[0].to_string()
}

/// A command failing part-way: name, with the identity?, arguments, the methods faulted and
/// how many of them go through first.
type Case<'a> = (&'a str, bool, Vec<&'a str>, &'a [&'a str], u64);

#[test]
fn every_command_fails_clearly_at_full_faults_and_the_repository_stays_valid() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start(0.0, seed());
    let repo = proxied_s3_repo(dir.path(), "repo", &proxy);
    let x = source(dir.path(), "x", 3, 4 << 20, 3);
    let y = source(dir.path(), "y", 2, 4 << 20, 4);
    let z = source(dir.path(), "z", 2, 4 << 20, 5);
    // Three packs' worth, for a backup that fails after its first pack.
    let big = source(dir.path(), "big", 3, 12 << 20, 6);

    // Without faults: two snapshots, and how many requests each command makes.
    bk(&repo, &["backup", "--config", x.to_str().unwrap()]).expect(0);
    bk(&repo, &["backup", "--config", y.to_str().unwrap()]).expect(0);
    let ids = snapshot_ids(&repo);
    // Forget X; this prune marks its packs, the next (phase 2) would delete them.
    id(&repo, &["forget", "--keep-last", "1"]).expect(0);
    let c = proxy.counts();
    let p = id(&repo, &["--json", "prune", "--safety-delay", "0s"]);
    p.expect(0);
    assert!(p.json()["marked"].as_u64().unwrap() >= 1, "{}", p.stdout);
    let prune_requests = proxy.counts().since(&c).requests;
    let c = proxy.counts();
    restore_and_compare(&repo, dir.path(), &ids[1], &[&y]);
    let restore_requests = proxy.counts().since(&c).requests;
    let c = proxy.counts();
    id(&repo, &["check", "--read-data"]).expect(0);
    let check_requests = proxy.counts().since(&c).requests;
    println!(
        "requests without faults: restore {restore_requests}, check {check_requests}, \
         prune {prune_requests}"
    );

    // 100% from the first request, one kind of fault at a time.
    let target = dir.path().join("target");
    let t = target.to_str().unwrap();
    let (zs, bigs) = (z.to_str().unwrap(), big.to_str().unwrap());
    let commands: [(&str, bool, Vec<&str>); 5] = [
        ("backup", false, vec!["backup", "--config", zs]),
        (
            "restore",
            true,
            vec!["restore", "latest", "--config-dir", t],
        ),
        ("check", true, vec!["check", "--read-data"]),
        ("prune", true, vec!["prune", "--safety-delay", "0s"]),
        ("snapshots", true, vec!["snapshots"]),
    ];
    for (kind, (name, identity, args)) in Fault::FAILING.into_iter().zip(&commands) {
        proxy.set_kinds(&[kind]);
        proxy.set_share(1.0);
        let c = proxy.counts();
        let run = timed(&repo, *identity, args);
        fails_clearly(&format!("{name} at 100% {kind:?}"), &run);
        assert!(proxy.counts().since(&c).of(kind) > 0);
    }

    // 100% part-way through each command, every failing kind: restore and check fail half-way
    // through, and at their last request (reading data); backup after its first pack is
    // uploaded; prune (phase 2) after it deleted the old index, before it deleted the packs.
    proxy.set_kinds(&Fault::FAILING);
    let restore = vec!["restore", "latest", "--config-dir", t];
    let check = vec!["check", "--read-data"];
    let midway: Vec<Case> = vec![
        (
            "backup",
            false,
            vec!["backup", "--config", bigs],
            &["PUT"],
            1,
        ),
        ("restore", true, restore.clone(), &[], restore_requests / 2),
        ("restore", true, restore, &[], restore_requests - 1),
        ("check", true, check.clone(), &[], check_requests / 2),
        ("check", true, check, &[], check_requests - 1),
        (
            "prune",
            true,
            vec!["prune", "--safety-delay", "0s"],
            &["DELETE"],
            1,
        ),
    ];
    for (name, identity, args, methods, after) in &midway {
        proxy.set_methods(methods);
        proxy.set_share_from(*after, 1.0);
        let run = timed(&repo, *identity, args);
        let what = format!("{name} failing after {after} {methods:?} requests");
        fails_clearly(&what, &run);
    }
    proxy.set_methods(&[]);
    // The failed restores left no temporary file and no partial file under a real name.
    for p in walk(&target).into_iter().filter(|p| p.is_file()) {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(!is_restore_temp(&p), "left behind: {}", p.display());
        assert!(
            fs::read(&p).unwrap() == fs::read(y.join(&name)).unwrap(),
            "partial file {}",
            p.display()
        );
    }

    // Faults off: the repository is valid, the failed backups recorded nothing, and the
    // snapshot still restores; the interrupted prune finishes.
    proxy.set_share(0.0);
    id(&repo, &["check", "--read-data"]).expect(0);
    assert_eq!(snapshot_ids(&repo), vec![ids[1].clone()]);
    restore_and_compare(&repo, dir.path(), &ids[1], &[&y]);
    id(&repo, &["prune", "--safety-delay", "0s"]).expect(0);
    id(&repo, &["check", "--read-data"]).expect(0);
    restore_and_compare(&repo, dir.path(), &ids[1], &[&y]);
    println!("total: {}", proxy.counts());
}

#[test]
fn a_snapshot_or_pack_the_store_fails_to_return_is_a_failure_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start(0.0, seed());
    let repo = proxied_s3_repo(dir.path(), "repo", &proxy);
    let x = source(dir.path(), "x", 2, 1 << 20, 7);
    let y = source(dir.path(), "y", 2, 1 << 20, 8);
    bk(&repo, &["backup", "--config", x.to_str().unwrap()]).expect(0);
    bk(&repo, &["backup", "--config", y.to_str().unwrap()]).expect(0);
    let listed = id(&repo, &["--json", "snapshots"]);
    listed.expect(0);
    let newest = listed.json()["snapshots"][1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let target = dir.path().join("target");
    let t = target.to_str().unwrap();

    // Only the newest snapshot's object fails: `latest` must not quietly become the older
    // snapshot, and nothing may call the repository damaged (exit 4).
    proxy.set_kinds(&[Fault::InternalError, Fault::SlowDown]);
    proxy.set_methods(&["GET"]);
    proxy.set_paths(&[&newest]);
    proxy.set_share(1.0);
    let commands: [(&str, Vec<&str>); 5] = [
        (
            "restore latest",
            vec!["restore", "latest", "--config-dir", t],
        ),
        ("snapshots", vec!["snapshots"]),
        ("check", vec!["check"]),
        ("forget", vec!["forget", "--keep-last", "1"]),
        ("prune", vec!["prune", "--safety-delay", "0s"]),
    ];
    for (name, args) in &commands {
        let run = timed(&repo, true, args);
        let line = fails_clearly(&format!("{name} with the newest snapshot failing"), &run);
        assert!(line.contains(&newest[..8]), "{name}: {line}");
    }
    assert!(!target.exists(), "nothing restored");

    // Every pack read fails: reading trees in a plain check is a failure, not damage.
    proxy.set_paths(&["/packs/"]);
    proxy.set_share(1.0);
    let run = timed(&repo, true, &["check"]);
    fails_clearly("check with pack reads failing", &run);
    let run = timed(&repo, true, &["check", "--read-data"]);
    fails_clearly("check --read-data with pack reads failing", &run);
    let run = timed(&repo, true, &["restore", "latest", "--config-dir", t]);
    fails_clearly("restore with pack reads failing", &run);

    proxy.set_paths(&[]);
    proxy.set_methods(&[]);
    proxy.set_share(0.0);
    id(&repo, &["check", "--read-data"]).expect(0);
    assert_eq!(snapshot_ids(&repo).len(), 2);
}

#[test]
fn init_survives_losing_the_response_to_its_config_write() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start(0.0, seed());
    // The server stores `config`, the answer is lost; the SDK's retry then finds it there.
    proxy.set_kinds(&[Fault::ResponseLost]);
    proxy.set_methods(&["PUT"]);
    proxy.set_window(0, 1, 1.0);
    let repo = proxied_s3_repo(dir.path(), "repo", &proxy);
    assert_eq!(proxy.counts().of(Fault::ResponseLost), 1);
    let x = source(dir.path(), "x", 1, 1 << 20, 9);
    bk(&repo, &["backup", "--config", x.to_str().unwrap()]).expect(0);
    let ids = snapshot_ids(&repo);
    restore_and_compare(&repo, dir.path(), &ids[0], &[&x]);
}

/// The proxy itself: chunked request bodies, `Expect: 100-continue` and several requests on
/// one keep-alive connection reach the server intact.
#[test]
fn the_proxy_forwards_chunked_bodies_continue_and_keep_alive() {
    use std::io::{BufReader, Write};
    let proxy = FaultProxy::start(0.0, seed());
    let bucket = new_bucket();
    let conn = std::net::TcpStream::connect(proxy.url.trim_start_matches("http://")).unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let host = proxy.url.trim_start_matches("http://").to_string();
    let a = noise(100_000, 11);
    let b = noise(70_000, 12);

    // A chunked PUT: two chunks and a trailer-less end.
    let mut req =
        format!("PUT /{bucket}/a HTTP/1.1\r\nHost: {host}\r\nx-amz-acl: public-read\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    for part in a.chunks(60_000) {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    w.write_all(&req).unwrap();
    let (head, body) = faultproxy::read_response(&mut r, "PUT").unwrap();
    assert!(
        head.start.contains(" 200 "),
        "{} {:?}",
        head.start,
        String::from_utf8_lossy(&body)
    );

    // Expect: 100-continue: the body goes only after the interim answer.
    w.write_all(
        format!(
            "PUT /{bucket}/b HTTP/1.1\r\nHost: {host}\r\nx-amz-acl: public-read\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            b.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let (interim, _) = faultproxy::read_response(&mut r, "PUT").unwrap();
    assert!(interim.start.contains(" 100 "), "{}", interim.start);
    w.write_all(&b).unwrap();
    let (head, _) = faultproxy::read_response(&mut r, "PUT").unwrap();
    assert!(head.start.contains(" 200 "), "{}", head.start);

    // Both back, on the same connection.
    for (key, want) in [("a", &a), ("b", &b)] {
        w.write_all(format!("GET /{bucket}/{key} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .unwrap();
        let (head, body) = faultproxy::read_response(&mut r, "GET").unwrap();
        assert!(head.start.contains(" 200 "), "{}", head.start);
        assert!(body == *want, "{key}: {} bytes back", body.len());
    }
    let c = proxy.counts();
    assert_eq!((c.requests, c.total_faults()), (4, 0), "{c}");
}

/// A registry layout in S3 (`<root>/docker/registry/v2/…`), written straight to the server:
/// one repository with a layer link per blob. Returns the s3:// URL of the root.
fn registry_in_s3(bucket: &str, blobs: &[Vec<u8>]) -> String {
    use sha2::Digest as _;
    let root = "harbor/registry/docker/registry/v2";
    for b in blobs {
        let hex = hex::encode(sha2::Sha256::digest(b));
        put_object(
            bucket,
            &format!("{root}/blobs/sha256/{}/{hex}/data", &hex[..2]),
            b,
        );
        put_object(
            bucket,
            &format!("{root}/repositories/library/app/_layers/sha256/{hex}/link"),
            format!("sha256:{hex}").as_bytes(),
        );
    }
    format!("s3://{bucket}/harbor/registry")
}

/// Registry blobs in S3 go through the other S3 paths: read as a stream on backup, written
/// in 8 MiB parts (multipart) on restore.
#[test]
fn registry_blobs_in_s3_survive_cut_bodies_lost_completions_and_ten_percent_faults() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start(0.0, seed());
    let repo = proxied_s3_repo(dir.path(), "repo", &proxy);
    let src = new_bucket();
    let mut blobs = vec![noise(20 << 20, 21), noise(3 << 20, 22), b"{}".to_vec()];
    let src_url = registry_in_s3(&src, &blobs);
    let reg = |flag: &'static str, url: &str| -> Vec<String> {
        [
            flag,
            url,
            "--registry-s3-endpoint",
            &proxy.url,
            "--registry-s3-path-style",
        ]
        .map(str::to_string)
        .to_vec()
    };
    let run = |identity: bool, cmd: &[&str], more: Vec<String>| -> Run {
        let mut args: Vec<&str> = cmd.to_vec();
        args.extend(more.iter().map(String::as_str));
        if identity {
            id(&repo, &args)
        } else {
            bk(&repo, &args)
        }
    };

    // The first blob read is cut half-way through its body: the backup resumes it.
    proxy.set_kinds(&[Fault::ResetMidBody]);
    proxy.set_methods(&["GET"]);
    proxy.set_paths(&["/blobs/sha256/"]);
    proxy.set_window(0, 1, 1.0);
    run(false, &["backup"], reg("--registry-s3", &src_url)).expect(0);
    assert_eq!(proxy.counts().of(Fault::ResetMidBody), 1);

    // The answer to completing the 20 MiB blob's multipart upload is lost: the restore
    // finds the object complete.
    let dst = new_bucket();
    let dst_url = format!("s3://{dst}/harbor/registry");
    proxy.set_kinds(&[Fault::ResponseLost]);
    proxy.set_methods(&["POST"]);
    proxy.set_paths(&["uploadId="]);
    proxy.set_window(0, 1, 1.0);
    run(true, &["restore", "latest"], reg("--registry-s3", &dst_url)).expect(0);
    assert_eq!(proxy.counts().of(Fault::ResponseLost), 1);
    assert_eq!(bucket_objects(&src), bucket_objects(&dst));

    // 10% of every request: a new blob backed up, restored into a fresh bucket, and again
    // into the first one (every blob already there, read back to be hashed).
    proxy.set_kinds(&Fault::ALL);
    proxy.set_methods(&[]);
    proxy.set_paths(&[]);
    proxy.set_share(0.10);
    blobs.push(noise(10 << 20, 23));
    registry_in_s3(&src, &blobs);
    run(false, &["backup"], reg("--registry-s3", &src_url)).expect(0);
    let fresh = new_bucket();
    let fresh_url = format!("s3://{fresh}/harbor/registry");
    run(
        true,
        &["restore", "latest"],
        reg("--registry-s3", &fresh_url),
    )
    .expect(0);
    run(
        true,
        &["restore", "latest", "--force"],
        reg("--registry-s3", &dst_url),
    )
    .expect(0);
    proxy.set_share(0.0);
    assert_eq!(bucket_objects(&src), bucket_objects(&fresh));
    assert_eq!(bucket_objects(&src), bucket_objects(&dst));
    id(&repo, &["check", "--read-data"]).expect(0);
    println!("total: {}", proxy.counts());
}
