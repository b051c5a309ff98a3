//! A BackupStorageLocation read the way Velero and its AWS plugin read it: every config key
//! honoured (its effect seen on the wire or in a TLS handshake) or refused with exit 2 and
//! one line naming the key.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::faultproxy::{FaultProxy, Seen};
use common::*;

/// The SSE-C key of the tests (32 bytes) and the MD5 header S3 gets for it.
const SSE_C_KEY: &[u8; 32] = b"0123456789abcdef0123456789ABCDEF";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sse_c_md5() -> String {
    use md5::Digest as _;
    b64(&md5::Md5::digest(SSE_C_KEY))
}

/// A BSL in a scratch directory: its YAML, credentials file and Secret mounts.
struct Site {
    dir: tempfile::TempDir,
    bucket: String,
    config: BTreeMap<String, String>,
    /// Extra lines under `objectStorage:` and `spec:` (indented already).
    object_storage: String,
    spec: String,
}

impl Site {
    /// A new bucket on the test S3 server, reached through `endpoint`.
    fn new(endpoint: &str) -> Site {
        Site::in_bucket(new_bucket(), endpoint)
    }

    fn in_bucket(bucket: String, endpoint: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("cloud"),
            "[default]\naws_access_key_id=DEFAULTKEY\naws_secret_access_key=x\n[velero]\naws_access_key_id=CLOUDKEY\naws_secret_access_key=testing\n",
        )
        .unwrap();
        let config = [
            ("region", "us-east-1"),
            ("s3Url", endpoint),
            ("s3ForcePathStyle", "true"),
            ("profile", "velero"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Site {
            dir,
            bucket,
            config,
            object_storage: String::new(),
            spec: String::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn secrets(&self) -> PathBuf {
        self.path("secrets")
    }

    /// Mount key `key` of Secret `name` as the manifests do.
    fn mount(&self, name: &str, key: &str, content: &[u8]) {
        let d = self.secrets().join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(key), content).unwrap();
    }

    fn set(&mut self, key: &str, value: &str) -> &mut Self {
        self.config.insert(key.into(), value.into());
        self
    }

    fn unset(&mut self, key: &str) -> &mut Self {
        self.config.remove(key);
        self
    }

    fn yaml(&self) -> String {
        let config: String = self
            .config
            .iter()
            .map(|(k, v)| format!("    {k}: {}\n", serde_json::to_string(v).unwrap()))
            .collect();
        format!(
            "apiVersion: velero.io/v1\nkind: BackupStorageLocation\nmetadata:\n  name: default\n  namespace: velero\nspec:\n  provider: aws\n  objectStorage:\n    bucket: {}\n    prefix: cluster\n{}  config:\n{config}{}  accessMode: ReadWrite\n",
            self.bucket, self.object_storage, self.spec
        )
    }

    /// drydock with this BSL (written now), the key file `key` and `env`.
    fn run(&self, key: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Run {
        let yaml = self.path("bsl.yaml");
        fs::write(&yaml, self.yaml()).unwrap();
        let (yaml, cloud, secrets) = (
            yaml.to_str().unwrap().to_string(),
            self.path("cloud").to_str().unwrap().to_string(),
            self.secrets().to_str().unwrap().to_string(),
        );
        let mut all = vec![
            "--velero-bsl",
            &yaml,
            "--velero-credentials",
            &cloud,
            "--velero-secrets",
            &secrets,
        ];
        if let Some(k) = key {
            all.extend(["--key", k.to_str().unwrap()]);
        }
        all.extend_from_slice(args);
        run_env(&all, env)
    }

    fn init(&self) {
        let (id, bk) = (self.path("id.txt"), self.path("backup.key"));
        let (id, bk) = (id.to_str().unwrap(), bk.to_str().unwrap());
        self.run(
            None,
            &["init", "--identity-out", id, "--backup-key-out", bk],
            &[],
        )
        .expect(0);
    }

    fn id(&self, args: &[&str]) -> Run {
        self.run(Some(&self.path("id.txt")), args, &[])
    }

    fn bk(&self, args: &[&str]) -> Run {
        self.run(Some(&self.path("backup.key")), args, &[])
    }

    /// A configuration tree to back up.
    fn source(&self) -> PathBuf {
        let d = self.path("src");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("harbor.yml"), b"hostname: harbor.example\n").unwrap();
        fs::write(d.join("data.bin"), noise(1 << 20, 9)).unwrap();
        d
    }
}

/// An initialised repository behind a recording proxy; the proxy's record starts empty.
fn recorded_site(edit: impl FnOnce(&mut Site)) -> (Site, FaultProxy) {
    let proxy = FaultProxy::start(0.0, 1);
    let mut site = Site::new(&proxy.url);
    edit(&mut site);
    site.init();
    proxy.take_seen();
    (site, proxy)
}

/// Object requests (a key under the bucket, not the bucket itself) of these methods.
fn object_requests<'a>(seen: &'a [Seen], bucket: &str, methods: &[&str]) -> Vec<&'a Seen> {
    let prefix = format!("/{bucket}/");
    seen.iter()
        .filter(|s| methods.contains(&s.method.as_str()))
        .filter(|s| {
            s.target
                .strip_prefix(&prefix)
                .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('?'))
        })
        .collect()
}

// ---------------------------------------------------------------- refusals

#[test]
fn every_bad_config_value_is_refused_with_one_line_naming_it() {
    let mut site = Site::new(&s3_endpoint());
    site.init();
    site.id(&["snapshots"]).expect(0);
    site.mount("short-key", "sse", b"only 16 bytes...");
    fs::write(site.path("short.key"), b"tooshort").unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("s3ForcePathStyle", "yes", "s3ForcePathStyle"),
        ("insecureSkipTLSVerify", "maybe", "insecureSkipTLSVerify"),
        ("checksumAlgorithm", "MD5", "checksumAlgorithm"),
        ("checksumAlgorithm", "crc32", "checksumAlgorithm"),
        ("serverSideEncryption", "DES", "serverSideEncryption"),
        ("tagging", "team=harbor", "tagging"),
        ("tagging", "a=1&b", "tagging"),
        ("tagging", "a=1&b=2\u{7}", "tagging"),
        ("s3Url", "ftp://minio:21", "s3Url"),
        ("publicUrl", "minio.example", "publicUrl"),
        (
            "customerKeyEncryptionSecret",
            "no-slash",
            "customerKeyEncryptionSecret",
        ),
        (
            "customerKeyEncryptionSecret",
            "../up/key",
            "customerKeyEncryptionSecret",
        ),
        ("customerKeyEncryptionSecret", "absent/sse", "\"absent\""),
        ("customerKeyEncryptionSecret", "short-key/sse", "32 bytes"),
        (
            "customerKeyEncryptionFile",
            "/nonexistent/key",
            "customerKeyEncryptionFile",
        ),
        ("regoin", "eu-west-1", "regoin"),
    ];
    let short = site.path("short.key").to_str().unwrap().to_string();
    let mut all: Vec<(&str, &str, &str)> = cases.to_vec();
    all.push(("customerKeyEncryptionFile", &short, "32 bytes"));
    for (key, value, needle) in all {
        let before = site.config.clone();
        site.set(key, value);
        let r = site.id(&["snapshots"]);
        assert_eq!(r.code, 2, "{key}={value:?}: {}", r.stderr);
        r.expect_error(2, needle);
        site.config = before;
    }
    // The plugin's rule: one of the three encryption keys at most.
    site.set("kmsKeyId", "arn:aws:kms:eu-west-1:1:key/k")
        .set("customerKeyEncryptionFile", &short);
    site.id(&["snapshots"]).expect_error(2, "kmsKeyId");
    site.unset("kmsKeyId").unset("customerKeyEncryptionFile");
    // Secrets: not mounted, or names that would leave the mount directory.
    site.spec = "  credential:\n    name: bsl-credentials\n    key: cloud\n".into();
    site.id(&["snapshots"])
        .expect_error(2, "Secret \"bsl-credentials\" key \"cloud\"");
    site.spec = "  credential:\n    name: ..\n    key: cloud\n".into();
    site.id(&["snapshots"]).expect_error(2, "spec.credential");
    site.spec.clear();
    site.object_storage = "    caCertRef:\n      name: minio-ca\n      key: ca.crt\n".into();
    site.id(&["snapshots"])
        .expect_error(2, "Secret \"minio-ca\" key \"ca.crt\"");
    site.object_storage = format!(
        "    caCert: {}\n    caCertRef:\n      name: minio-ca\n      key: ca.crt\n",
        b64(b"-----BEGIN CERTIFICATE-----\n")
    );
    site.id(&["snapshots"]).expect_error(2, "caCertRef");
    site.object_storage.clear();
    // Keys the plugin accepts and drydock has no use for: accepted.
    site.set("enableSharedConfig", "true")
        .set("signatureVersion", "4")
        .set("publicUrl", "https://minio.example.com")
        .set("checksumAlgorithm", "CRC32C");
    site.id(&["snapshots"]).expect(0);
}

#[test]
fn go_parse_bool_spellings_switch_path_style() {
    // A host name, not an IP address (the SDK addresses an IP endpoint path-style anyway).
    let mut site = Site::new(&s3_endpoint().replace("127.0.0.1", "localhost"));
    site.init();
    for t in ["1", "t", "T", "TRUE", "true", "True"] {
        site.set("s3ForcePathStyle", t);
        site.id(&["snapshots"]).expect(0);
    }
    // Off: the bucket becomes a host name (<bucket>.localhost), which does not resolve.
    for f in ["0", "f", "F", "FALSE", "false", "False"] {
        site.set("s3ForcePathStyle", f);
        let r = site.id(&["snapshots"]);
        assert_eq!(r.code, 1, "s3ForcePathStyle={f}: {}", r.stderr);
        assert!(r.stderr.contains("dns error"), "{f}: {}", r.stderr);
    }
}

// ---------------------------------------------------------------- credentials

/// The access key id the requests were signed with.
fn signed_by(seen: &[Seen]) -> Vec<String> {
    let mut ids: Vec<String> = seen
        .iter()
        .filter_map(|s| s.header("authorization"))
        .filter_map(|a| a.split("Credential=").nth(1))
        .filter_map(|c| c.split('/').next())
        .map(str::to_string)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[test]
fn credentials_come_from_either_file_format_and_from_spec_credential() {
    let (mut site, proxy) = recorded_site(|_| {});
    site.id(&["snapshots"]).expect(0);
    assert_eq!(signed_by(&proxy.take_seen()), ["CLOUDKEY"]);
    // The AWS config format, as Velero reads the same file as shared config too.
    fs::write(
        site.path("cloud"),
        "[default]\naws_access_key_id=DEFAULTKEY\naws_secret_access_key=x\n[profile velero]\naws_access_key_id=CONFIGKEY\naws_secret_access_key=testing\n",
    )
    .unwrap();
    site.id(&["snapshots"]).expect(0);
    assert_eq!(signed_by(&proxy.take_seen()), ["CONFIGKEY"]);
    // config.credentialsFile beats --velero-credentials.
    let own = site.path("own-credentials");
    fs::write(
        &own,
        "[velero]\naws_access_key_id=FILEKEY\naws_secret_access_key=t\n",
    )
    .unwrap();
    site.set("credentialsFile", own.to_str().unwrap());
    site.id(&["snapshots"]).expect(0);
    assert_eq!(signed_by(&proxy.take_seen()), ["FILEKEY"]);
    // spec.credential beats both (Velero passes it as credentialsFile).
    site.mount(
        "bsl-credentials",
        "cloud",
        b"[profile velero]\naws_access_key_id=SECRETKEY\naws_secret_access_key=t\n",
    );
    site.spec = "  credential:\n    name: bsl-credentials\n    key: cloud\n".into();
    site.id(&["snapshots"]).expect(0);
    assert_eq!(signed_by(&proxy.take_seen()), ["SECRETKEY"]);
    // A profile neither file has.
    site.set("profile", "nosuch");
    site.id(&["snapshots"]).expect_error(5, "nosuch");
}

// ---------------------------------------------------------------- region

#[test]
fn a_bsl_without_region_or_url_asks_s3_for_the_bucket_region() {
    let bucket = format!("dd-region-{}", std::process::id());
    let client = common::s3_client_in("eu-west-3");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(
            client
                .create_bucket()
                .bucket(&bucket)
                .create_bucket_configuration(
                    aws_sdk_s3::types::CreateBucketConfiguration::builder()
                        .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest3)
                        .build(),
                )
                .send(),
        )
        .unwrap();
    let proxy = FaultProxy::start(0.0, 1);
    let mut site = Site::in_bucket(bucket, &proxy.url);
    site.unset("region").unset("s3Url");
    // AWS itself, as far as the BSL knows: the endpoint comes from the SDK's environment.
    let env = [("AWS_ENDPOINT_URL", proxy.url.as_str())];
    let (id, bk) = (site.path("id.txt"), site.path("backup.key"));
    site.run(
        None,
        &[
            "init",
            "--identity-out",
            id.to_str().unwrap(),
            "--backup-key-out",
            bk.to_str().unwrap(),
        ],
        &env,
    )
    .expect(0);
    let seen = proxy.take_seen();
    assert_eq!(seen[0].method, "HEAD", "{:?}", seen[0]);
    let scopes: Vec<&str> = seen[1..]
        .iter()
        .filter_map(|s| s.header("authorization"))
        .filter_map(|a| a.split('/').nth(2))
        .collect();
    assert!(
        !scopes.is_empty() && scopes.iter().all(|r| *r == "eu-west-3"),
        "{scopes:?}"
    );
}

// ---------------------------------------------------------------- encryption and request settings

#[test]
fn sse_kms_tags_and_checksums_go_with_every_write() {
    let (site, proxy) = recorded_site(|s| {
        s.set("kmsKeyId", "arn:aws:kms:us-east-1:1:key/harbor")
            .set("serverSideEncryption", "AES256")
            .set("tagging", "team=harbor&backup=drydock");
    });
    let src = site.source();
    site.bk(&["backup", "--config", src.to_str().unwrap()])
        .expect(0);
    let seen = proxy.take_seen();
    let puts = object_requests(&seen, &site.bucket, &["PUT"]);
    assert!(puts.len() >= 3, "{}", puts.len());
    for p in &puts {
        // kmsKeyId wins over serverSideEncryption, as in the plugin.
        assert_eq!(
            p.header("x-amz-server-side-encryption"),
            Some("aws:kms"),
            "{}",
            p.target
        );
        assert_eq!(
            p.header("x-amz-server-side-encryption-aws-kms-key-id"),
            Some("arn:aws:kms:us-east-1:1:key/harbor")
        );
        assert_eq!(
            p.header("x-amz-tagging"),
            Some("team=harbor&backup=drydock")
        );
        // Velero's default checksum.
        assert!(p.header("x-amz-checksum-crc32").is_some(), "{p:?}");
    }
    for g in object_requests(&seen, &site.bucket, &["GET", "HEAD"]) {
        assert!(g.header("x-amz-server-side-encryption").is_none(), "{g:?}");
    }
}

#[test]
fn checksum_algorithm_names_the_checksum_and_empty_turns_it_off() {
    let (mut site, proxy) = recorded_site(|s| {
        s.set("checksumAlgorithm", "SHA256");
    });
    let src = site.source();
    site.bk(&["backup", "--config", src.to_str().unwrap()])
        .expect(0);
    let seen = proxy.take_seen();
    let puts = object_requests(&seen, &site.bucket, &["PUT"]);
    assert!(!puts.is_empty());
    assert!(puts
        .iter()
        .all(|p| p.header("x-amz-checksum-sha256").is_some()
            && p.header("x-amz-checksum-crc32").is_none()));
    // "": no checksum headers at all (Ceph, B2).
    site.set("checksumAlgorithm", "");
    site.bk(&["backup", "--config", src.to_str().unwrap()])
        .expect(0);
    let seen = proxy.take_seen();
    let puts = object_requests(&seen, &site.bucket, &["PUT"]);
    assert!(!puts.is_empty());
    for p in puts {
        assert!(
            !p.headers
                .iter()
                .any(|(k, _)| k.to_lowercase().starts_with("x-amz-checksum-")),
            "{p:?}"
        );
    }
}

/// A multipart upload (an object over the single-PUT limit) through the library: SSE and
/// tags on CreateMultipartUpload, the checksum on every part.
#[test]
fn multipart_uploads_carry_the_settings_too() {
    let proxy = FaultProxy::start(0.0, 1);
    let mut site = Site::new(&proxy.url);
    site.set("serverSideEncryption", "aws:kms:dsse")
        .set("tagging", "a=1&b=2");
    let bsl = drydock::velero::Bsl::parse(&site.yaml()).unwrap();
    let mut opts = bsl.s3_options(None, &site.secrets()).unwrap();
    opts.credentials_file = test_s3_options().credentials_file;
    opts.profile = None;
    let data = bytes::Bytes::from(noise(drydock::store::s3::MULTIPART_THRESHOLD + 1, 3));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = drydock::store::s3::S3Store::connect(&site.bucket, "big", &opts)
            .await
            .unwrap();
        use drydock::store::Store as _;
        store
            .put("blob", data.clone(), drydock::store::PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(store.get("blob").await.unwrap(), data);
    });
    let seen = proxy.take_seen();
    let create = seen
        .iter()
        .find(|s| s.method == "POST" && s.target.ends_with("?uploads"))
        .expect("a multipart upload");
    assert_eq!(
        create.header("x-amz-server-side-encryption"),
        Some("aws:kms:dsse")
    );
    assert_eq!(create.header("x-amz-tagging"), Some("a=1&b=2"));
    let parts: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.method == "PUT" && s.target.contains("partNumber="))
        .collect();
    assert!(parts.len() >= 2);
    assert!(parts
        .iter()
        .all(|p| p.header("x-amz-checksum-crc32").is_some()));
}

/// The SSE-C headers S3 needs on a request for an SSE-C object.
fn carries_sse_c(s: &Seen) -> bool {
    s.header("x-amz-server-side-encryption-customer-algorithm") == Some("AES256")
        && s.header("x-amz-server-side-encryption-customer-key") == Some(&b64(SSE_C_KEY))
        && s.header("x-amz-server-side-encryption-customer-key-md5") == Some(&sse_c_md5())
}

#[test]
fn sse_c_from_a_secret_round_trips_and_follow_velero_reads_velero_backup_json() {
    let (site, proxy) = recorded_site(|s| {
        s.mount("velero-sse-c", "key", SSE_C_KEY);
        s.set("customerKeyEncryptionSecret", "velero-sse-c/key");
    });
    // Velero's backup object (written by Velero with the same key).
    put_object(
        &site.bucket,
        "cluster/backups/daily-20261120010000/velero-backup.json",
        br#"{"status":{"phase":"Completed","expiration":"2999-01-01T00:00:00Z"}}"#,
    );
    let src = site.source();
    // The one whose Velero backup is gone first: the newest of a host is never forgotten.
    for name in ["daily-20200101010000", "daily-20261120010000"] {
        site.bk(&[
            "backup",
            "--config",
            src.to_str().unwrap(),
            "--velero-backup",
            name,
        ])
        .expect(0);
    }
    let snapshots = site.id(&["--json", "snapshots"]).json()["snapshots"].clone();
    let id = snapshots[0]["id"].as_str().unwrap().to_string();
    let out = site.path("restored");
    site.id(&["restore", &id, "--config-dir", out.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&src, &restored(&out, &src));
    let r = site.id(&["--json", "forget", "--follow-velero"]);
    r.expect(0);
    assert_eq!(
        r.json()["forgotten"].as_array().unwrap().len(),
        1,
        "{}",
        r.stdout
    );
    let seen = proxy.take_seen();
    let objects = object_requests(&seen, &site.bucket, &["GET", "HEAD", "PUT", "POST"]);
    let missing: Vec<String> = objects
        .iter()
        .filter(|s| !carries_sse_c(s))
        .map(|s| format!("{} {}", s.method, s.target))
        .collect();
    assert!(
        missing.is_empty(),
        "requests without the SSE-C key: {missing:?}"
    );
    for kind in ["GET", "PUT"] {
        assert!(objects.iter().any(|s| s.method == kind), "no {kind}");
    }
    let velero_json = objects
        .iter()
        .find(|s| {
            s.target
                .contains("backups/daily-20261120010000/velero-backup.json")
        })
        .expect("follow-velero read velero-backup.json");
    assert!(carries_sse_c(velero_json));
    // The key is a secret: never in drydock's output.
    assert!(!r.stderr.contains(&b64(SSE_C_KEY)) && !r.stdout.contains(&b64(SSE_C_KEY)));
}

#[test]
fn sse_c_from_a_file_uses_its_first_32_bytes_as_the_plugin_does() {
    let (site, proxy) = recorded_site(|s| {
        // A trailing newline after the key, as an editor leaves it.
        let mut key = SSE_C_KEY.to_vec();
        key.push(b'\n');
        fs::write(s.path("sse-c.key"), key).unwrap();
        let p = s.path("sse-c.key").to_str().unwrap().to_string();
        s.set("customerKeyEncryptionFile", &p);
    });
    let src = site.source();
    site.bk(&["backup", "--config", src.to_str().unwrap()])
        .expect(0);
    site.id(&["check", "--read-data"]).expect(0);
    let seen = proxy.take_seen();
    let objects = object_requests(&seen, &site.bucket, &["GET", "HEAD", "PUT"]);
    assert!(!objects.is_empty());
    assert!(objects.iter().all(|s| carries_sse_c(s)));
}

// ---------------------------------------------------------------- TLS

/// moto_server speaking https with `pki`'s server certificate; stopped when dropped.
struct TlsMoto {
    child: Child,
    url: String,
}

impl Drop for TlsMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_moto(pki: &common::tls::TestPki) -> TlsMoto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string(), "-c"])
        .arg(&pki.server_cert)
        .arg("-k")
        .arg(&pki.server_key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server (TLS) did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    TlsMoto {
        child,
        url: format!("https://127.0.0.1:{port}"),
    }
}

/// Create `bucket` on a TLS moto (moto takes an unsigned PUT).
fn create_bucket_tls(moto: &TlsMoto, ca: &Path, bucket: &str) {
    let out = Command::new("curl")
        .args(["-sf", "--cacert"])
        .arg(ca)
        .args(["-X", "PUT", &format!("{}/{bucket}", moto.url)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "create bucket: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tls_endpoints_with_a_private_ca_inline_by_secret_or_unverified() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = common::tls::make_pki(pki_dir.path(), "drydock test CA", "IP:127.0.0.1");
    let other_dir = tempfile::tempdir().unwrap();
    let other = common::tls::make_pki(other_dir.path(), "another CA", "IP:127.0.0.1");
    let moto = tls_moto(&pki);
    let bucket = format!("dd-tls-{}", std::process::id());
    create_bucket_tls(&moto, &pki.ca_cert, &bucket);
    let mut site = Site::in_bucket(bucket, &moto.url);
    let ca = fs::read(&pki.ca_cert).unwrap();
    // Without the CA the handshake fails: the certificate is really checked.
    let (id, bk) = (site.path("id.txt"), site.path("backup.key"));
    let init = [
        "init",
        "--identity-out",
        id.to_str().unwrap(),
        "--backup-key-out",
        bk.to_str().unwrap(),
    ];
    let r = site.run(None, &init, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr); // a store error (docs/OPERATIONS.md exit codes)
                                           // objectStorage.caCert (base64 PEM).
    site.object_storage = format!("    caCert: {}\n", b64(&ca));
    site.init();
    let src = site.source();
    site.bk(&["backup", "--config", src.to_str().unwrap()])
        .expect(0);
    // objectStorage.caCertRef: the Secret mounted.
    site.mount("minio-ca", "ca.crt", &ca);
    site.object_storage = "    caCertRef:\n      name: minio-ca\n      key: ca.crt\n".into();
    site.id(&["snapshots"]).expect(0);
    // The wrong CA fails.
    site.mount("minio-ca", "ca.crt", &fs::read(&other.ca_cert).unwrap());
    let r = site.id(&["snapshots"]);
    assert_eq!(r.code, 1, "{}", r.stderr); // a store error (docs/OPERATIONS.md exit codes)
                                           // insecureSkipTLSVerify: works with no CA at all, and says what it gives up.
    site.object_storage.clear();
    site.set("insecureSkipTLSVerify", "true");
    let r = site.id(&["snapshots"]);
    r.expect(0);
    assert!(
        r.stderr.contains("insecureSkipTLSVerify") && r.stderr.contains("not verified"),
        "{}",
        r.stderr
    );
}
