//! Archival storage classes (FORMAT.md §6.1, OPERATIONS.md "Archival storage classes"), on
//! moto: data packs in GLACIER, everything else in STANDARD. moto answers a GET of a
//! GLACIER object with InvalidObjectState until RestoreObject, and thaws on its state
//! manager's schedule (`/moto-api/state-manager/set-transition`, model `s3::keyrestore`),
//! which is global to the server: the tests here take turns.

mod common;

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use common::faultproxy::{proxied_s3_repo_with, seed, Fault, FaultProxy};
use common::*;

/// Fast polls: a test waits for moto's state manager, not for hours.
const POLL: (&str, &str) = ("DRYDOCK_THAW_POLL_MS", "20");
const INFO: (&str, &str) = ("DRYDOCK_LOG", "drydock=info");

/// moto's thaw schedule is one setting for the whole server.
fn moto_state() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// How moto thaws: `{"progression": "immediate"}`, or `manual` with `times` reads of the
/// object per step (none → IN_PROGRESS → RESTORED).
fn set_thaw_schedule(transition: serde_json::Value) {
    let url = format!("{}/moto-api/state-manager/set-transition", s3_endpoint());
    let body = serde_json::json!({"model_name": "s3::keyrestore", "transition": transition});
    let status = block_on(async {
        reqwest::Client::new()
            .post(&url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(status.is_success(), "{status}");
}

/// Every object of the bucket and its storage class.
fn classes(bucket: &str) -> Vec<(String, String)> {
    block_on(async {
        let out = raw_s3_client()
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        out.contents()
            .iter()
            .map(|o| {
                let class = o.storage_class().map(|c| c.as_str()).unwrap_or("STANDARD");
                (o.key().unwrap().to_string(), class.to_string())
            })
            .collect()
    })
}

fn cold_keys(bucket: &str) -> Vec<String> {
    classes(bucket)
        .into_iter()
        .filter(|(_, c)| c == "GLACIER")
        .map(|(k, _)| k)
        .collect()
}

/// Requests of `method` whose target names one of `keys`.
fn touching(proxy: &FaultProxy, methods: &[&str], keys: &[String]) -> Vec<String> {
    proxy
        .requests()
        .into_iter()
        .filter(|(m, t)| methods.contains(&m.as_str()) && keys.iter().any(|k| t.contains(k)))
        .map(|(m, t)| format!("{m} {t}"))
        .collect()
}

/// RestoreObject requests so far.
fn thaw_requests(proxy: &FaultProxy) -> usize {
    proxy
        .requests()
        .iter()
        .filter(|(m, t)| m == "POST" && t.contains("restore"))
        .count()
}

/// A configuration tree of a few files above the chunker's minimum (smaller ones are
/// sealed, so never deduplicated).
fn source(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("etc-harbor");
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..4u64 {
        fs::write(src.join(format!("f{i}")), noise(600_000, i)).unwrap();
    }
    fs::write(src.join("sub/harbor.yml"), b"hostname: reg\n").unwrap();
    src
}

fn restore_into(repo: &Repo, out: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["--json", "restore", "latest", "--config-dir"];
    args.push(out.to_str().unwrap());
    args.extend_from_slice(extra);
    repo.with_key_env(&repo.identity, &args, &[POLL, INFO])
}

fn glacier_repo(dir: &Path, proxy: &FaultProxy) -> (Repo, String) {
    let repo = proxied_s3_repo_with(dir, "r", proxy, &["--storage-class", "glacier"]);
    let bucket = repo.s3.as_ref().unwrap().1.clone();
    (repo, bucket)
}

/// A GLACIER repository behind a fresh proxy, and the source tree (backed up if `backup`).
struct Setup {
    dir: tempfile::TempDir,
    proxy: FaultProxy,
    repo: Repo,
    bucket: String,
    src: std::path::PathBuf,
}

fn setup(backup: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start(0.0, seed());
    let (repo, bucket) = glacier_repo(dir.path(), &proxy);
    let src = source(dir.path());
    if backup {
        repo.backup(&[&src]);
    }
    Setup {
        dir,
        proxy,
        repo,
        bucket,
        src,
    }
}

#[test]
fn backups_never_read_archived_packs_and_restore_thaws_exactly_those_needed() {
    let _turn = moto_state();
    set_thaw_schedule(serde_json::json!({"progression": "manual", "times": 2}));
    let Setup {
        dir,
        proxy,
        repo,
        bucket,
        src,
    } = setup(true);
    // The second backup deduplicates against the archived packs: from the index alone.
    fs::write(src.join("f4"), noise(600_000, 4)).unwrap();
    let second = repo.backup(&[&src]);
    assert!(second.to_string().contains("snapshot"));
    repo.id(&["snapshots"]).expect(0);
    repo.id(&["check"]).expect(0);
    let all = classes(&bucket);
    let cold = cold_keys(&bucket);
    assert!(!cold.is_empty(), "{all:?}");
    for (key, class) in &all {
        let is_pack = key.contains("/packs/");
        assert!(
            class == "STANDARD" || (is_pack && class == "GLACIER"),
            "{key} is in {class}"
        );
    }
    assert!(
        all.iter()
            .any(|(k, c)| k.contains("/packs/") && c == "STANDARD"),
        "tree packs stay in STANDARD: {all:?}"
    );
    assert_eq!(
        touching(&proxy, &["GET", "HEAD"], &cold),
        Vec::<String>::new()
    );

    let out = dir.path().join("out");
    let r = restore_into(&repo, &out, &[]);
    r.expect(0);
    let thaw = &r.json()["thaw"];
    assert_eq!(thaw["requested"], cold.len(), "{thaw}");
    assert_eq!(thaw_requests(&proxy), cold.len());
    assert!(
        r.stderr.contains("thaw:") && r.stderr.contains("packs ready"),
        "{}",
        r.stderr
    );
    assert_same_tree(&src, &restored(&out, &src));

    // Thawed now: a second restore asks for nothing.
    let again = dir.path().join("again");
    let r = restore_into(&repo, &again, &[]);
    r.expect(0);
    assert_eq!(r.json()["thaw"]["requested"], 0);
    assert_eq!(r.json()["thaw"]["thawed"], cold.len());
    assert_eq!(thaw_requests(&proxy), cold.len());
    assert_same_tree(&src, &restored(&again, &src));
}

#[test]
fn an_interrupted_restore_resumes_without_a_second_thaw_request() {
    let _turn = moto_state();
    set_thaw_schedule(serde_json::json!({"progression": "immediate"}));
    let Setup {
        dir,
        proxy,
        repo,
        bucket,
        src,
    } = setup(true);
    let cold = cold_keys(&bucket);
    // The planning HEADs go through; every HEAD of a pack after them fails: the restore
    // stops while it waits, after its RestoreObject requests.
    proxy.set_methods(&["HEAD"]);
    proxy.set_paths(&["/packs/"]);
    proxy.set_kinds(&[Fault::InternalError]);
    proxy.set_share_from(cold.len() as u64, 1.0);
    let out = dir.path().join("out");
    let r = restore_into(&repo, &out, &[]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert_eq!(thaw_requests(&proxy), cold.len());

    proxy.set_share(0.0);
    let r = restore_into(&repo, &out, &["--force"]);
    r.expect(0);
    assert_eq!(r.json()["thaw"]["requested"], 0);
    assert_eq!(thaw_requests(&proxy), cold.len(), "no second RestoreObject");
    assert_same_tree(&src, &restored(&out, &src));
}

#[test]
fn dry_runs_list_the_thaw_without_doing_it() {
    let _turn = moto_state();
    let Setup {
        dir,
        proxy,
        repo,
        bucket,
        src: _,
    } = setup(true);
    let cold = cold_keys(&bucket);
    let r = repo.id(&[
        "--json",
        "check",
        "--read-data",
        "--dry-run",
        "--thaw-tier",
        "Bulk",
    ]);
    r.expect(0);
    let thaw = &r.json()["report"]["thaw"];
    let listed: Vec<String> = thaw["to_thaw"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| format!("r/{}", k.as_str().unwrap()))
        .collect();
    assert_eq!(listed, cold, "{thaw}");
    assert_eq!(thaw["tier"], "Bulk");
    assert!(thaw["bytes"].as_u64().unwrap() > 0);
    assert!(thaw["cost_class"].as_str().unwrap().contains("lowest"));
    let r = restore_into(&repo, &dir.path().join("out"), &["--dry-run"]);
    r.expect(0);
    assert_eq!(
        r.json()["thaw"]["to_thaw"].as_array().unwrap().len(),
        cold.len()
    );
    assert_eq!(thaw_requests(&proxy), 0);
    assert_eq!(touching(&proxy, &["GET"], &cold), Vec::<String>::new());
    assert!(!dir.path().join("out").exists());
    // A structural check has nothing to thaw: --dry-run alone is a usage error.
    repo.id(&["check", "--dry-run"])
        .expect_error(2, "--read-data");
}

#[test]
fn deep_archive_refuses_the_expedited_tier_before_asking() {
    let _turn = moto_state();
    let dir = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start(0.0, seed());
    let repo = proxied_s3_repo_with(
        dir.path(),
        "r",
        &proxy,
        &["--storage-class", "DEEP_ARCHIVE"],
    );
    repo.backup(&[&source(dir.path())]);
    let r = restore_into(
        &repo,
        &dir.path().join("out"),
        &["--thaw-tier", "expedited"],
    );
    r.expect_error(2, "no Expedited thaw tier");
    assert_eq!(thaw_requests(&proxy), 0);
}

#[test]
fn instant_access_classes_are_read_directly() {
    let _turn = moto_state();
    let Setup {
        dir,
        proxy,
        repo,
        bucket,
        src,
    } = setup(false);
    // The backup's class overrides the repository's.
    let r = repo.bk(&[
        "backup",
        "--storage-class",
        "STANDARD_IA",
        "--config",
        src.to_str().unwrap(),
    ]);
    r.expect(0);
    let all = classes(&bucket);
    assert!(all.iter().any(|(_, c)| c == "STANDARD_IA"), "{all:?}");
    assert!(cold_keys(&bucket).is_empty());
    let out = dir.path().join("out");
    let r = restore_into(&repo, &out, &[]);
    r.expect(0);
    assert_eq!(r.json()["thaw"]["packs"], 0);
    assert_eq!(thaw_requests(&proxy), 0);
    assert_same_tree(&src, &restored(&out, &src));
    let r = repo.bk(&[
        "backup",
        "--storage-class",
        "not a class",
        "--config",
        src.to_str().unwrap(),
    ]);
    r.expect(2);
    assert!(r.stderr.contains("invalid storage class"), "{}", r.stderr);
}

/// A GET that S3 answers with InvalidObjectState is the thaw path: the pack is thawed,
/// waited for and read, whatever the plan said.
#[test]
fn a_get_answering_invalid_object_state_is_thawed_and_read() {
    let _turn = moto_state();
    set_thaw_schedule(serde_json::json!({"progression": "manual", "times": 2}));
    std::env::set_var(POLL.0, POLL.1);
    let Setup {
        dir: _dir,
        proxy: _proxy,
        repo,
        bucket,
        ..
    } = setup(true);
    let cold = cold_keys(&bucket);
    let key = cold[0].strip_prefix("r/").unwrap().to_string();
    let pack = drydock::repo::pack::id_of_key(&key).unwrap();
    block_on(async {
        let store = repo.store().await;
        match store.get(&key).await {
            Err(drydock::error::Error::Cold(m)) => assert!(m.contains("InvalidObjectState"), "{m}"),
            other => panic!("{:?}", other.map(|b| b.len())),
        }
        let keyfile = drydock::crypto::KeyFile::load(&repo.identity).unwrap();
        let opened = Arc::new(
            drydock::repo::Repository::open(store, keyfile)
                .await
                .unwrap(),
        );
        let thawer = drydock::repo::thaw::Thawer::new(
            opened,
            drydock::repo::thaw::ThawOptions {
                tier: drydock::store::ThawTier::Standard,
                days: 1,
                dry_run: false,
            },
        );
        let bytes = thawer.get_pack(&pack).await.unwrap();
        assert_eq!(drydock::ids::sha256(&bytes), pack.0);
        let store = repo.store().await;
        let state = store.cold_state(&key).await.unwrap();
        assert_eq!(state.class.as_str(), "GLACIER");
        assert!(state.readable(), "{state:?}");
    });
}
