//! Shared helpers for the integration tests: run the real binary, build source trees,
//! and a real S3 server (moto_server) on a free loopback port.

#![allow(dead_code)]

pub mod faultproxy;
pub mod forge;
pub mod pg;
pub mod registry;
pub mod tls;
pub mod token;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_drydock");

/// SplitMix64: small, seedable, good enough to pick requests, offsets and lengths.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next() % n
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The result of one drydock run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    /// The error lines drydock printed (it promises exactly one per failure).
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("drydock: error:"))
            .collect()
    }

    #[track_caller]
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Fails with `code` and exactly one error line containing `needle`.
    #[track_caller]
    pub fn expect_error(&self, code: i32, needle: &str) -> &Self {
        self.expect(code);
        let lines = self.error_lines();
        assert_eq!(
            lines.len(),
            1,
            "want one error line, stderr: {}",
            self.stderr
        );
        assert!(
            lines[0].contains(needle),
            "error {:?} should mention {needle:?}",
            lines[0]
        );
        self
    }
}

/// Wait for a spawned drydock (`Repo::spawn_bk`, `spawn_with`) and collect its run.
pub fn wait(child: Child) -> Run {
    finish(child.wait_with_output().expect("wait for drydock"))
}

fn finish(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A repository under test: its location arguments and key files.
#[derive(Clone)]
pub struct Repo {
    pub args: Vec<String>,
    pub identity: PathBuf,
    pub backup_key: PathBuf,
    pub local_root: Option<PathBuf>,
    pub s3: Option<(String, String)>,
}

impl Repo {
    /// The repository's store, opened in-process as `--repo` (and the S3 options) say.
    pub async fn store(&self) -> std::sync::Arc<dyn drydock::store::Store> {
        let location = drydock::store::Location::parse(&self.args[1]).unwrap();
        // moto's credentials, as the child processes get them from the environment.
        let credentials = std::env::temp_dir().join("drydock-test-moto-credentials");
        std::fs::write(
            &credentials,
            "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
        )
        .unwrap();
        let options = drydock::store::S3Options {
            endpoint: self.s3.as_ref().map(|(e, _)| e.clone()),
            region: Some("us-east-1".into()),
            path_style: self.s3.is_some(),
            credentials_file: self.s3.is_some().then_some(credentials),
            ..Default::default()
        };
        drydock::store::open(&location, &options).await.unwrap()
    }
}

pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("DRYDOCK_REPO")
        .env_remove("DRYDOCK_KEY_FILE")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("DRYDOCK_S3_MAX_ATTEMPTS", "3")
        .env("DRYDOCK_LOG", "drydock=warn")
        .stdin(Stdio::null());
    c
}

pub fn run(args: &[&str]) -> Run {
    run_env(args, &[])
}

/// Run with extra environment variables (PGPASSWORD, …).
pub fn run_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = command(args);
    c.env_remove("DRYDOCK_POSTGRES")
        .env_remove("PGPASSWORD")
        .env_remove("PGHOST");
    for (k, v) in env {
        c.env(k, v);
    }
    finish(c.output().expect("run drydock"))
}

impl Repo {
    pub fn with_key(&self, key: &Path, args: &[&str]) -> Run {
        self.with_key_env(key, args, &[])
    }

    pub fn with_key_env(&self, key: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        run_env(&self.key_args(key, args), env)
    }

    /// This repository's arguments, `--key key`, then `args`.
    fn key_args<'a>(&'a self, key: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
        let mut all: Vec<&str> = self.args.iter().map(String::as_str).collect();
        all.extend_from_slice(&["--key", key.to_str().unwrap()]);
        all.extend_from_slice(args);
        all
    }

    /// With the identity (can do everything).
    pub fn id(&self, args: &[&str]) -> Run {
        self.with_key(&self.identity, args)
    }

    /// With the backup-only key.
    pub fn bk(&self, args: &[&str]) -> Run {
        self.with_key(&self.backup_key, args)
    }

    /// drydock with `key` and `args`, output piped, to be spawned.
    pub fn command_with(&self, key: &Path, args: &[&str]) -> Command {
        let mut c = command(&self.key_args(key, args));
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    /// Start drydock with `key`, output piped.
    pub fn spawn_with(&self, key: &Path, args: &[&str]) -> Child {
        self.command_with(key, args).spawn().expect("spawn drydock")
    }

    pub fn spawn_bk(&self, args: &[&str]) -> Child {
        self.spawn_with(&self.backup_key, args)
    }

    /// The deployed CronJob's retention with `--prune`, then a second prune: both past
    /// the safety delay, so what the first marks the second deletes.
    #[track_caller]
    pub fn deployed_forget_and_prune(&self) {
        self.deployed_forget().expect(0);
        self.id(&["prune", "--safety-delay", "0s"]).expect(0);
    }

    /// The deployed CronJob's `forget … --prune`, with no safety delay; its result.
    pub fn deployed_forget(&self) -> Run {
        self.deployed_forget_with(&self.identity.clone())
    }

    /// The deployed CronJob's `forget … --prune` with the key given, no safety delay.
    pub fn deployed_forget_with(&self, key: &Path) -> Run {
        self.with_key(
            key,
            &[
                "forget",
                "--expired",
                "--keep-daily",
                "7",
                "--keep-weekly",
                "4",
                "--keep-monthly",
                "6",
                "--prune",
                "--safety-delay",
                "0s",
            ],
        )
    }

    /// Every snapshot id `snapshots --json` lists with the identity, sorted.
    pub fn snapshot_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.id(&["--json", "snapshots"]).json()["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }

    /// `backup --registry-fs REG` with the backup-only key; the snapshot id.
    #[track_caller]
    pub fn backup_registry(&self, reg: &Path) -> String {
        let r = self.bk(&["--json", "backup", "--registry-fs", reg.to_str().unwrap()]);
        r.expect(0);
        r.json()["snapshot"].as_str().unwrap().to_string()
    }

    /// Every snapshot, restored with the identity, gives the registry tree `reg`'s blobs
    /// byte for byte.
    #[track_caller]
    pub fn assert_restores_registry(&self, dir: &Path, reg: &Path) {
        for id in self.snapshot_ids() {
            let out = dir.join(format!("out-{}", &id[..8]));
            self.id(&["restore", &id, "--registry-fs", out.to_str().unwrap()])
                .expect(0);
            for f in walk(&out.join("docker/registry/v2/blobs")) {
                if f.is_file() {
                    let rel = f.strip_prefix(&out).unwrap();
                    assert_eq!(fs::read(&f).unwrap(), fs::read(reg.join(rel)).unwrap());
                }
            }
        }
    }

    /// `backup --json` with the backup-only key; returns the summary.
    #[track_caller]
    pub fn backup(&self, paths: &[&Path]) -> serde_json::Value {
        let mut args = vec!["--json", "backup"];
        for p in paths {
            args.push("--config");
            args.push(p.to_str().unwrap());
        }
        let r = self.bk(&args);
        r.expect(0);
        r.json()
    }
}

/// `init` the repository `args` locate, with extra environment variables, writing the
/// identity and the backup-only key in `keys`; their paths.
fn init(args: &[String], keys: &Path, env: &[(&str, &str)]) -> (PathBuf, PathBuf) {
    init_with(args, &[], keys, env)
}

/// [`init`] with `extra` arguments after `init`'s own.
fn init_with(
    args: &[String],
    extra: &[&str],
    keys: &Path,
    env: &[(&str, &str)],
) -> (PathBuf, PathBuf) {
    let identity = keys.join("identity.txt");
    let backup_key = keys.join("backup.key");
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(&[
        "init",
        "--identity-out",
        identity.to_str().unwrap(),
        "--backup-key-out",
        backup_key.to_str().unwrap(),
    ]);
    all.extend_from_slice(extra);
    run_env(&all, env).expect(0);
    (identity, backup_key)
}

pub fn local_repo(dir: &Path) -> Repo {
    let root = dir.join("repo");
    let args = vec!["--repo".to_string(), root.to_str().unwrap().to_string()];
    let (identity, backup_key) = init(&args, dir, &[]);
    Repo {
        args,
        identity,
        backup_key,
        local_root: Some(root),
        s3: None,
    }
}

pub fn s3_repo(dir: &Path, prefix: &str) -> Repo {
    let endpoint = s3_endpoint();
    let bucket = new_bucket();
    let args = vec![
        "--repo".to_string(),
        format!("s3://{bucket}/{prefix}"),
        "--s3-endpoint".to_string(),
        endpoint.clone(),
        "--s3-path-style".to_string(),
    ];
    let (identity, backup_key) = init(&args, dir, &[]);
    Repo {
        args,
        identity,
        backup_key,
        local_root: None,
        s3: Some((endpoint, bucket)),
    }
}

// ---------------------------------------------------------------- S3 (moto_server)

struct Moto {
    endpoint: String,
    _child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The S3 endpoint: DRYDOCK_TEST_S3_ENDPOINT (scripts/test starts one), or a moto_server
/// started here for this test binary.
pub fn s3_endpoint() -> String {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        if let Ok(e) = std::env::var("DRYDOCK_TEST_S3_ENDPOINT") {
            return Moto {
                endpoint: e,
                _child: None,
            };
        }
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server must be installed (scripts/test installs it)");
        // Stop it when this test binary exits (statics are never dropped).
        static PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
        extern "C" fn stop_moto() {
            let pid = PID.load(std::sync::atomic::Ordering::Relaxed);
            if pid > 0 {
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        PID.store(child.id() as i32, std::sync::atomic::Ordering::Relaxed);
        unsafe { libc::atexit(stop_moto) };
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            endpoint,
            _child: Some(child),
        }
    })
    .endpoint
    .clone()
}

fn s3_client() -> aws_sdk_s3::Client {
    s3_client_in("us-east-1")
}

/// A client of the test S3 server that signs for `region`.
pub fn s3_client_in(region: &'static str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(region))
        .endpoint_url(s3_endpoint())
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

pub fn new_bucket() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "dd-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    block_on(s3_client().create_bucket().bucket(&name).send()).expect("create bucket");
    name
}

/// A bucket with S3 Object Lock enabled (so versioned), as `drydock init --object-lock`
/// wants one.
pub fn new_locked_bucket() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "dd-lock-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    block_on(
        s3_client()
            .create_bucket()
            .bucket(&name)
            .object_lock_enabled_for_bucket(true)
            .send(),
    )
    .expect("create locked bucket");
    name
}

/// Set a GOVERNANCE retention date on one version behind drydock's back (moto lets a
/// bypassing caller move it either way): how tests make retention expire, or shorten it.
pub async fn set_version_retention(
    bucket: &str,
    key: &str,
    version: &str,
    until: chrono::DateTime<chrono::Utc>,
) {
    s3_client()
        .put_object_retention()
        .bucket(bucket)
        .key(key)
        .version_id(version)
        .bypass_governance_retention(true)
        .retention(
            aws_sdk_s3::types::ObjectLockRetention::builder()
                .mode(aws_sdk_s3::types::ObjectLockRetentionMode::Governance)
                .retain_until_date(aws_smithy_types::DateTime::from_secs(until.timestamp()))
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// Every (key, version id) of the bucket's object versions, delete markers left out.
pub async fn all_versions(bucket: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
    loop {
        let page = s3_client()
            .list_object_versions()
            .bucket(bucket)
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(version_marker.clone())
            .send()
            .await
            .unwrap();
        for v in page.versions() {
            out.push((
                v.key().unwrap().to_string(),
                v.version_id().unwrap().to_string(),
            ));
        }
        if page.is_truncated() != Some(true) {
            return out;
        }
        key_marker = page.next_key_marker().map(String::from);
        version_marker = page.next_version_id_marker().map(String::from);
    }
}

/// A plain SDK client for the test S3 server: what a bucket writer (or an attacker with
/// the bucket's credentials) does behind drydock's back.
pub fn raw_s3_client() -> aws_sdk_s3::Client {
    s3_client()
}

/// The options that open a store on the test S3 server in-process (path style, moto's
/// credentials from a file, as `Repo::store` does). The file is written once per process
/// and replaced whole (a rename): a store opened while another test truncated and rewrote
/// it in place would find it empty.
pub fn test_s3_options() -> drydock::store::S3Options {
    static CREDENTIALS: OnceLock<PathBuf> = OnceLock::new();
    let credentials = CREDENTIALS.get_or_init(|| {
        let path = std::env::temp_dir().join("drydock-test-moto-credentials-store");
        let mut tmp = tempfile::NamedTempFile::new_in(std::env::temp_dir()).unwrap();
        std::io::Write::write_all(
            &mut tmp,
            b"[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
        )
        .unwrap();
        tmp.persist(&path).unwrap();
        path
    });
    drydock::store::S3Options {
        endpoint: Some(s3_endpoint()),
        region: Some("us-east-1".into()),
        path_style: true,
        credentials_file: Some(credentials.clone()),
        ..Default::default()
    }
}

pub fn put_object(bucket: &str, key: &str, body: &[u8]) {
    let body = body.to_vec();
    block_on(
        s3_client()
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body.into())
            .send(),
    )
    .expect("put object");
}

pub fn delete_object(bucket: &str, key: &str) {
    block_on(s3_client().delete_object().bucket(bucket).key(key).send()).expect("delete object");
}

/// Every object in a bucket: key and bytes.
pub fn bucket_objects(bucket: &str) -> Vec<(String, Vec<u8>)> {
    block_on(async {
        let c = s3_client();
        let list = c.list_objects_v2().bucket(bucket).send().await.unwrap();
        let mut out = Vec::new();
        for o in list.contents() {
            let key = o.key().unwrap().to_string();
            let body = c
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .unwrap();
            out.push((
                key,
                body.body.collect().await.unwrap().into_bytes().to_vec(),
            ));
        }
        out
    })
}

// ---------------------------------------------------------------- source trees

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn set_mtime(p: &Path, secs: i64) {
    let t = filetime::FileTime::from_unix_time(secs, 123_456_789);
    filetime::set_symlink_file_times(p, t, t).unwrap();
}

/// A Harbor-like configuration tree: harbor.yml, a secret key, a Kubernetes Secret volume
/// with its `..data` symlinks, unicode and spaces in names, odd modes, a larger file.
pub fn harbor_config_tree(root: &Path, big: usize) -> (PathBuf, PathBuf) {
    let etc = root.join("etc/harbor");
    fs::create_dir_all(etc.join("cert dir/ünïcode ✓")).unwrap();
    fs::create_dir_all(etc.join("empty")).unwrap();
    fs::write(
        etc.join("harbor.yml"),
        "hostname: harbor.example.com\nharbor_admin_password: x\n".repeat(20),
    )
    .unwrap();
    fs::write(
        etc.join("cert dir/ünïcode ✓/tls.key"),
        b"-----BEGIN KEY-----\nabc\n",
    )
    .unwrap();
    fs::write(etc.join("empty file"), b"").unwrap();
    fs::write(etc.join("big.bin"), noise(big, 7)).unwrap();
    fs::set_permissions(etc.join("harbor.yml"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(
        etc.join("cert dir/ünïcode ✓/tls.key"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::set_permissions(etc.join("empty"), fs::Permissions::from_mode(0o750)).unwrap();

    let secret = root.join("secret");
    let ts = secret.join("..2026_11_21_10_00_00.123456789");
    fs::create_dir_all(&ts).unwrap();
    fs::write(ts.join("secretKey"), b"not-a-real-key16").unwrap();
    fs::write(ts.join("tls.crt"), b"CERT").unwrap();
    symlink("..2026_11_21_10_00_00.123456789", secret.join("..data")).unwrap();
    symlink("..data/secretKey", secret.join("secretKey")).unwrap();
    symlink("..data/tls.crt", secret.join("tls.crt")).unwrap();

    // Distinct mtimes everywhere, directories last (writing children changes them).
    let mut all: Vec<PathBuf> = walk(root);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, 1_700_000_000 + i as i64 * 1000);
    }
    (etc, secret)
}

/// Every path under `root` (not following symlinks), root excluded. Entries that vanish
/// while walking (a writer's temporary files) are skipped.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Assert two trees are identical: kinds, contents, link targets, modes, mtimes.
#[track_caller]
pub fn assert_same_tree(a: &Path, b: &Path) {
    let rel = |root: &Path, v: Vec<PathBuf>| -> Vec<PathBuf> {
        v.into_iter()
            .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
            .collect()
    };
    let (la, lb) = (rel(a, walk(a)), rel(b, walk(b)));
    assert_eq!(la, lb, "different entries");
    for r in std::iter::once(PathBuf::new()).chain(la) {
        let (pa, pb) = (a.join(&r), b.join(&r));
        let (ma, mb) = (
            fs::symlink_metadata(&pa).unwrap(),
            fs::symlink_metadata(&pb).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "{}", r.display());
        if ma.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(&pa).unwrap(),
                fs::read_link(&pb).unwrap(),
                "{}",
                r.display()
            );
        } else {
            assert_eq!(
                ma.mode() & 0o7777,
                mb.mode() & 0o7777,
                "mode of {}",
                r.display()
            );
        }
        if ma.is_file() {
            assert!(
                fs::read(&pa).unwrap() == fs::read(&pb).unwrap(),
                "content of {}",
                r.display()
            );
        }
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "mtime of {}",
            r.display()
        );
    }
}

/// Whether `p` is one of restore's temporary files (a leftover, when the restore is over).
pub fn is_restore_temp(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(drydock::beneath::is_temp_name)
}

/// Where a backed-up absolute path lands under a restore target.
pub fn restored(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").unwrap())
}

/// Every file in a local repository with its bytes.
pub fn repo_files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    walk(root)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Edit the repository's `config` as JSON and tag it again with the identity, as only a
/// holder of the identity can (the config is authenticated, FORMAT.md §4): how tests get
/// small packs and chunks, which no option sets.
pub fn reseal_config(repo: &Repo, edit: impl Fn(&mut serde_json::Value)) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = repo.store().await;
        let bytes = store.get(drydock::repo::config::KEY).await.unwrap();
        let drydock::crypto::KeyFile::Identity(identity) =
            drydock::crypto::KeyFile::load(&repo.identity).unwrap()
        else {
            panic!("not an identity");
        };
        let original = drydock::repo::config::RepoConfig::parse(&bytes).unwrap();
        let chunk_key = original.unseal(&identity).unwrap().chunk_key;
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        edit(&mut v);
        let mut config: drydock::repo::config::RepoConfig = serde_json::from_value(v).unwrap();
        config.seal(&chunk_key, Some(&identity));
        store
            .put(
                drydock::repo::config::KEY,
                config.to_bytes().into(),
                drydock::store::PutMode::Overwrite,
            )
            .await
            .unwrap();
    });
}

/// A filesystem registry root: `n` layers of `size` bytes, each linked from one repository;
/// their digests (`sha256:<hex>`).
pub fn registry_tree_with_layers(root: &Path, n: u64, size: usize) -> Vec<String> {
    use sha2::Digest as _;
    let v2 = root.join("docker/registry/v2");
    let mut digests = Vec::new();
    for i in 0..n {
        let data = noise(size, 50 + i);
        let hex = hex::encode(sha2::Sha256::digest(&data));
        let dir = v2.join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("data"), data).unwrap();
        let link = v2.join(format!(
            "repositories/library/app/_layers/sha256/{hex}/link"
        ));
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::fs::write(link, format!("sha256:{hex}")).unwrap();
        digests.push(format!("sha256:{hex}"));
    }
    digests
}
