//! The deployment's three S3 credentials (docs/SECURITY.md §1 "Three credentials, three S3
//! policies") against an S3 server that enforces IAM: moto_server started here with
//! `INITIAL_NO_AUTH_ACTION_COUNT`, so that after the setup requests (the bucket, the IAM
//! users, their access keys and inline policies) every request is signed-checked and
//! evaluated against the caller's policies. The three policies are read from SECURITY.md
//! itself, verbatim, for the bucket `harbor-backups` and the repository under `drydock/`
//! that the document names, so the test follows the document.
//!
//! It runs drydock as the deployment does: `init --object-lock` with an administrator's
//! credential; `backup` with the backup-only key and the backup credential; `forget` and
//! `prune` with the maintenance key and the maintenance credential (Object Lock holding
//! everything, then, once the retention is moved into the past behind drydock's back, the
//! deletes going through); `restore` and `check --read-data` with the identity and the drill
//! credential. The other credentials are refused what they must not do: the backup and drill
//! credentials delete nothing (raw SDK deletes, and a `prune` with the maintenance key), the
//! drill credential writes nothing (a `backup` fails with exit 5), and no credential reaches
//! outside `drydock/`.
//!
//! What moto 5 enforces, found by experiment (and read in moto/s3/responses.py ACTION_MAP and
//! moto/iam/access_control.py), and therefore what this test can and cannot prove:
//!
//! | request | IAM action moto checks | AWS |
//! |---|---|---|
//! | ListObjectsV2 | `s3:ListBucket` on the bucket | same |
//! | ListObjectVersions | `s3:ListBucketVersions` | same |
//! | GetObjectLockConfiguration | `s3:ListBucket` | `s3:GetBucketObjectLockConfiguration` |
//! | PutObjectLockConfiguration | `s3:CreateBucket` | `s3:PutBucketObjectLockConfiguration` |
//! | GetObject, HeadObject | `s3:GetObject` on the object | same |
//! | GetObject with versionId | `s3:GetObjectVersion` | same |
//! | HeadObject with versionId | `s3:GetObject` | `s3:GetObjectVersion` |
//! | GetObjectRetention | `s3:GetObject(Version)` (and answers with the object) | `s3:GetObjectRetention` |
//! | PutObject, multipart uploads | `s3:PutObject` | same |
//! | PutObjectRetention | `s3:PutObject` | `s3:PutObjectRetention` |
//! | DeleteObject (without, with versionId) | `s3:DeleteObject`, `s3:DeleteObjectVersion` | same |
//! | `x-amz-bypass-governance-retention` | nothing | `s3:BypassGovernanceRetention` |
//!
//! Resource ARNs with wildcards (`arn:aws:s3:::harbor-backups/drydock/*`) are matched, and an
//! explicit Deny overrides an Allow. `Condition` is not evaluated for user policies:
//! `StringLike` is ignored and `StringEquals` passes when the request supplies no value, so
//! the `s3:prefix` conditions of the policies are not checked here (a listing outside
//! `drydock/` is allowed by moto). Object Lock itself is moto's, independent of IAM: a
//! retained GOVERNANCE version cannot be deleted without the bypass header. But
//! `s3:BypassGovernanceRetention` is never checked, so the policies' Deny of it cannot be
//! shown: on moto, any caller with `s3:DeleteObjectVersion` deletes a retained version with
//! the bypass header, and any caller with `s3:PutObject` can shorten a GOVERNANCE retention
//! even without it. The test therefore only shows that drydock never bypasses: the prune
//! under retention deletes nothing, although moto would let the maintenance credential.
//!
//! Not shown here, because of that mapping: whether a policy grants
//! `s3:GetBucketObjectLockConfiguration` (moto checks `s3:ListBucket`, which all three have,
//! and ignores the `s3:prefix` condition that, on AWS, no GetObjectLockConfiguration request
//! satisfies), which `Repository::open` needs when `config` is hidden behind a delete marker;
//! nor `s3:AbortMultipartUpload` (mapped by moto, but the data here is far below drydock's
//! multipart threshold).
//!
//! One moto bug is worked around: its signature check rebuilds the request URL through
//! werkzeug, which decodes `%2F` in the query, so every request with a `/` in a query value
//! (every drydock listing: `prefix=drydock/…`) fails with SignatureDoesNotMatch
//! (getmoto/moto#5948). The moto started here loads a `sitecustomize.py` (through
//! `PYTHONPATH`) that re-encodes the query as SigV4 canonicalises it before moto computes the
//! signature; it changes nothing else.

mod common;

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::error::ProvideErrorMetadata;
use common::*;

const BUCKET: &str = "harbor-backups";
const PREFIX: &str = "drydock";

/// An access key of one IAM user.
#[derive(Clone)]
struct Credential {
    id: String,
    secret: String,
}

/// The administrator (init, and the test's own look behind drydock's back), then the three
/// users of SECURITY.md §1, in the order its policies appear.
const USERS: [&str; 4] = ["admin", "backup", "maintenance", "drill"];

/// Requests moto lets through unauthenticated: CreateBucket, then per user CreateUser,
/// CreateAccessKey and PutUserPolicy.
const SETUP_REQUESTS: usize = 1 + 3 * USERS.len();

const ADMIN_POLICY: &str = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}"#;

/// Fixes getmoto/moto#5948 in the moto process (see the module comment).
const MOTO_PATCH: &str = r#"
import sys
try:
    from urllib.parse import quote, unquote
    import moto.iam.access_control as _ac

    _create = _ac.IAMRequestBase._create_aws_request

    def _canonical_query(self):
        path, sep, query = self._path.partition("?")
        if sep:
            pairs = []
            for pair in query.split("&"):
                k, eq, v = pair.partition("=")
                k, v = quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")
                pairs.append(k + "=" + v if eq else k)
            self._path = path + "?" + "&".join(pairs)
        return _create(self)

    _ac.IAMRequestBase._create_aws_request = _canonical_query
    print("drydock test: moto SigV4 query patch applied", file=sys.stderr, flush=True)
except Exception as e:
    print("drydock test: moto SigV4 query patch NOT applied: %r" % (e,), file=sys.stderr, flush=True)
"#;

/// A moto_server of this test's own, enforcing IAM after `SETUP_REQUESTS`; killed on drop.
struct IamMoto {
    endpoint: String,
    log: PathBuf,
    child: Child,
}

impl IamMoto {
    fn start(dir: &Path) -> IamMoto {
        let site = dir.join("moto-site");
        fs::create_dir_all(&site).unwrap();
        fs::write(site.join("sitecustomize.py"), MOTO_PATCH).unwrap();
        let python_path = match std::env::var("PYTHONPATH") {
            Ok(p) if !p.is_empty() => format!("{}:{p}", site.display()),
            _ => site.display().to_string(),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("moto.log");
        let out = fs::File::create(&log).unwrap();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", SETUP_REQUESTS.to_string())
            .env("PYTHONPATH", python_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("moto_server must be installed (scripts/test installs it)");
        let moto = IamMoto {
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start: {}",
                moto.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One IAM Query API call, unsigned: only for the requests moto lets through before it
    /// enforces (the Authorization header only routes the request to moto's IAM).
    async fn iam(&self, http: &reqwest::Client, params: &[(&str, &str)]) -> String {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter().copied())
            .append_pair("Version", "2010-05-08")
            .finish();
        let response = http
            .post(format!("{}/", self.endpoint))
            .header(
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=setup/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body(body)
            .send()
            .await
            .expect("IAM request");
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "IAM {params:?}: HTTP {status}: {text}");
        text
    }

    /// Create `user` with `policy` inline; its access key.
    async fn user(&self, http: &reqwest::Client, user: &str, policy: &str) -> Credential {
        self.iam(http, &[("Action", "CreateUser"), ("UserName", user)])
            .await;
        let key = self
            .iam(http, &[("Action", "CreateAccessKey"), ("UserName", user)])
            .await;
        self.iam(
            http,
            &[
                ("Action", "PutUserPolicy"),
                ("UserName", user),
                ("PolicyName", "drydock"),
                ("PolicyDocument", policy),
            ],
        )
        .await;
        Credential {
            id: xml_text(&key, "AccessKeyId"),
            secret: xml_text(&key, "SecretAccessKey"),
        }
    }
}

impl Drop for IamMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn xml_text(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>")).unwrap();
    xml[start..end].to_string()
}

/// The backup, maintenance and drill policies of SECURITY.md §1, in that order, as compact
/// JSON.
fn documented_policies() -> [String; 3] {
    let doc = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/SECURITY.md")).unwrap();
    let start = doc
        .find("### Three credentials, three S3 policies")
        .expect("SECURITY.md has the section on the three credentials");
    let section = &doc[start..];
    let section = &section[..section[4..].find("\n#").map_or(section.len(), |i| i + 4)];
    let mut parts = section.split("```json");
    let mut preface = parts.next().unwrap();
    let mut out = Vec::new();
    for (part, name) in parts.zip(["Backup (", "Maintenance (", "Drill ("]) {
        assert!(
            preface.contains(name),
            "SECURITY.md: the policy after {preface:?} should be the {name:?} one"
        );
        let (block, rest) = part.split_once("```").unwrap();
        let policy: serde_json::Value = serde_json::from_str(block)
            .unwrap_or_else(|e| panic!("SECURITY.md's {name:?} policy is not JSON: {e}"));
        assert!(
            block.contains(&format!("arn:aws:s3:::{BUCKET}/{PREFIX}/*")),
            "SECURITY.md's {name:?} policy is for {BUCKET}/{PREFIX}"
        );
        out.push(policy.to_string());
        preface = rest;
    }
    out.try_into()
        .expect("SECURITY.md gives three policies: backup, maintenance, drill")
}

fn s3_client(endpoint: &str, credential: &Credential) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            &credential.id,
            &credential.secret,
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// The S3 error code of a request that must fail.
fn refused<T, E: ProvideErrorMetadata + std::fmt::Debug>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => panic!("the request should have been refused"),
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("an S3 error without a code: {e:?}"))
            .to_string(),
    }
}

/// Every (key, version id) under `drydock/`, and the number of delete markers.
async fn versions(admin: &aws_sdk_s3::Client) -> (Vec<(String, String)>, usize) {
    let page = admin
        .list_object_versions()
        .bucket(BUCKET)
        .prefix(format!("{PREFIX}/"))
        .send()
        .await
        .unwrap();
    assert_ne!(page.is_truncated(), Some(true), "a tiny repository");
    let mut out: Vec<(String, String)> = page
        .versions()
        .iter()
        .map(|v| {
            (
                v.key().unwrap().to_string(),
                v.version_id().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    (out, page.delete_markers().len())
}

/// Move the retention of every version under `drydock/` a day into the past (as an
/// administrator with the bypass, which moto honours for anyone): what time does to a
/// repository, without waiting for it. A day is past drydock's clock-skew allowance, within
/// which an AccessDenied on a delete is taken for retention.
async fn expire_retention(admin: &aws_sdk_s3::Client) {
    let past = chrono::Utc::now() - chrono::Duration::days(1);
    for (key, version) in versions(admin).await.0 {
        admin
            .put_object_retention()
            .bucket(BUCKET)
            .key(&key)
            .version_id(&version)
            .bypass_governance_retention(true)
            .retention(
                aws_sdk_s3::types::ObjectLockRetention::builder()
                    .mode(aws_sdk_s3::types::ObjectLockRetentionMode::Governance)
                    .retain_until_date(aws_smithy_types::DateTime::from_secs(past.timestamp()))
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
}

#[track_caller]
fn assert_all_kept(before: &[(String, String)], after: &[(String, String)], what: &str) {
    for v in before {
        assert!(after.contains(v), "{what} removed the version {v:?}");
    }
}

/// drydock with `credential` as the AWS credential of the environment.
struct Drydock {
    repo: Vec<String>,
}

impl Drydock {
    fn run(&self, credential: &Credential, key: Option<&Path>, args: &[&str]) -> Run {
        let mut all: Vec<&str> = self.repo.iter().map(String::as_str).collect();
        if let Some(key) = key {
            all.extend(["--key", key.to_str().unwrap()]);
        }
        all.extend_from_slice(args);
        let out = command(&all)
            .env("AWS_ACCESS_KEY_ID", &credential.id)
            .env("AWS_SECRET_ACCESS_KEY", &credential.secret)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("DRYDOCK_POSTGRES")
            .output()
            .expect("run drydock");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

#[test]
fn the_three_credentials_of_the_deployment_work_with_least_privilege_on_an_iam_enforcing_s3() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let moto = IamMoto::start(dir.path());
    let [backup_policy, maintenance_policy, drill_policy] = documented_policies();

    // Setup, in moto's unauthenticated window: the Object Lock bucket, then the users.
    let setup = Credential {
        id: "testing".into(),
        secret: "testing".into(),
    };
    let [admin, backup, maintenance, drill] = rt.block_on(async {
        s3_client(&moto.endpoint, &setup)
            .create_bucket()
            .bucket(BUCKET)
            .object_lock_enabled_for_bucket(true)
            .send()
            .await
            .expect("create the Object Lock bucket");
        let http = reqwest::Client::new();
        let mut creds = Vec::new();
        for (user, policy) in USERS.iter().zip([
            ADMIN_POLICY,
            backup_policy.as_str(),
            maintenance_policy.as_str(),
            drill_policy.as_str(),
        ]) {
            creds.push(moto.user(&http, user, policy).await);
        }
        <[Credential; 4]>::try_from(creds).ok().unwrap()
    });
    let client = |c: &Credential| s3_client(&moto.endpoint, c);
    let admin_s3 = client(&admin);
    // From here on moto checks every request: a key it does not know is refused.
    assert_eq!(
        refused(rt.block_on(client(&setup).list_objects_v2().bucket(BUCKET).send())),
        "InvalidAccessKeyId",
        "moto should enforce IAM after the setup requests; its log:\n{}",
        moto.log_text()
    );

    let dd = Drydock {
        repo: vec![
            "--repo".into(),
            format!("s3://{BUCKET}/{PREFIX}"),
            "--s3-endpoint".into(),
            moto.endpoint.clone(),
            "--s3-path-style".into(),
        ],
    };
    let keys = dir.path().join("keys");
    fs::create_dir(&keys).unwrap();
    let (identity, backup_key, maintenance_key) = (
        keys.join("identity.txt"),
        keys.join("backup.key"),
        keys.join("maintenance.key"),
    );
    let init = dd.run(
        &admin,
        None,
        &[
            "init",
            "--object-lock",
            "GOVERNANCE:1",
            "--identity-out",
            identity.to_str().unwrap(),
            "--backup-key-out",
            backup_key.to_str().unwrap(),
            "--maintenance-key-out",
            maintenance_key.to_str().unwrap(),
        ],
    );
    assert_eq!(
        init.code,
        0,
        "init with the administrator's credential: {}\nmoto's log:\n{}",
        init.stderr,
        moto.log_text()
    );

    // --- the backup CronJob: put, get, list.
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("harbor.yml"), "hostname: harbor.example.com\n").unwrap();
    fs::write(src.join("secretKey"), "not-a-real-key16").unwrap();
    let backup_of = |what: &str| {
        let r = dd.run(
            &backup,
            Some(&backup_key),
            &["--json", "backup", "--config", src.to_str().unwrap()],
        );
        r.expect(0);
        let id = r.json()["snapshot"].as_str().unwrap().to_string();
        println!("{what}: snapshot {id}");
        id
    };
    let first = backup_of("first backup");
    fs::write(src.join("harbor.yml"), "hostname: harbor2.example.com\n").unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(src.join("secretKey"))
        .unwrap()
        .write_all(b"\n")
        .unwrap();
    let second = backup_of("second backup");

    // The backup credential deletes nothing (a plain DELETE would only add a delete marker
    // under Object Lock: IAM refuses it) and reaches nothing outside drydock/.
    let (written, markers) = rt.block_on(versions(&admin_s3));
    assert_eq!(markers, 0);
    let (key, version) = written
        .iter()
        .find(|(k, _)| k.starts_with(&format!("{PREFIX}/snapshots/")))
        .unwrap()
        .clone();
    rt.block_on(async {
        for c in [&backup, &drill] {
            let s3 = client(c);
            let plain = s3.delete_object().bucket(BUCKET).key(&key).send().await;
            assert_eq!(refused(plain), "AccessDenied");
            let one = s3
                .delete_object()
                .bucket(BUCKET)
                .key(&key)
                .version_id(&version)
                .send()
                .await;
            assert_eq!(refused(one), "AccessDenied");
        }
        for c in [&backup, &maintenance, &drill] {
            let outside = client(c)
                .put_object()
                .bucket(BUCKET)
                .key("elsewhere/object")
                .body(b"x".to_vec().into())
                .send()
                .await;
            assert_eq!(refused(outside), "AccessDenied");
        }
        // The drill credential writes nothing in drydock/ either.
        let put = client(&drill)
            .put_object()
            .bucket(BUCKET)
            .key(format!("{PREFIX}/snapshots/planted"))
            .body(b"x".to_vec().into())
            .send()
            .await;
        assert_eq!(refused(put), "AccessDenied");
    });
    assert_eq!(
        rt.block_on(versions(&admin_s3)),
        (written.clone(), 0),
        "the refused requests changed nothing"
    );

    // The drill credential cannot back up, even with the backup-only key.
    dd.run(
        &drill,
        Some(&backup_key),
        &["backup", "--config", src.to_str().unwrap()],
    )
    .expect_error(5, "access denied");

    // --- the forget/prune CronJob: Object Lock holds everything, nothing is deleted.
    let forget = dd.run(
        &maintenance,
        Some(&maintenance_key),
        &["--json", "forget", &first],
    );
    forget.expect(0);
    assert_eq!(forget.json()["forgotten"][0]["id"], first.as_str());
    let prune = |c: &Credential| {
        dd.run(
            c,
            Some(&maintenance_key),
            &["--json", "prune", "--safety-delay", "0s"],
        )
    };
    let marking = prune(&maintenance);
    marking.expect(0);
    assert!(
        marking.json()["marked"].as_u64().unwrap() >= 1,
        "the first snapshot's own packs are marked: {}",
        marking.stdout
    );
    let held = prune(&maintenance);
    held.expect(0);
    let report = held.json();
    assert_eq!(report["deleted_packs"], 0, "{}", held.stdout);
    assert!(
        report["packs_retained"].as_u64().unwrap() >= 1,
        "retention holds the unused packs: {}",
        held.stdout
    );
    let (before, markers) = rt.block_on(versions(&admin_s3));
    assert_eq!(markers, 0);
    assert_all_kept(&written, &before, "a prune under retention");

    // --- retention over: only the maintenance credential can delete.
    rt.block_on(expire_retention(&admin_s3));
    for c in [&backup, &drill] {
        prune(c).expect_error(5, "access denied");
    }
    let (after, _) = rt.block_on(versions(&admin_s3));
    assert_all_kept(
        &before,
        &after,
        "a prune with the backup or drill credential",
    );

    rt.block_on(expire_retention(&admin_s3));
    let deleting = prune(&maintenance);
    deleting.expect(0);
    let report = deleting.json();
    assert!(
        report["deleted_packs"].as_u64().unwrap() >= 1,
        "the marked packs are deleted once their retention is over: {}",
        deleting.stdout
    );
    assert_eq!(report["packs_retained"], 0, "{}", deleting.stdout);
    let (left, markers) = rt.block_on(versions(&admin_s3));
    assert!(left.len() < after.len(), "versions were deleted");
    assert_eq!(markers, 0, "a locked repository's delete leaves no marker");
    let first_key = format!("{PREFIX}/snapshots/{first}");
    assert!(
        !left.iter().any(|(k, _)| *k == first_key),
        "the forgotten snapshot's object is deleted"
    );

    // --- the drill: read with the identity, get and list only.
    let out = dir.path().join("out");
    dd.run(
        &drill,
        Some(&identity),
        &["restore", "latest", "--config-dir", out.to_str().unwrap()],
    )
    .expect(0);
    assert_same_tree(&src, &restored(&out, &src));
    dd.run(&drill, Some(&identity), &["check", "--read-data"])
        .expect(0);
    let listed = dd.run(&drill, Some(&identity), &["--json", "snapshots"]);
    listed.expect(0);
    let snapshots = listed.json();
    let ids: Vec<&str> = snapshots["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str()]);
}
