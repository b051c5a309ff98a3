//! Format v2 authenticates every object drydock decides on (FORMAT.md §3.1). Each test forges,
//! from FORMAT.md, an object as a bucket writer without keys (or with the backup-only key)
//! would, runs what the deploy runs, and checks that no real snapshot is lost, that `check`
//! names the forgery, and that every real snapshot still restores byte for byte.

mod common;

use std::fs;
use std::path::Path;

use chrono::{TimeZone, Utc};
use common::forge::*;
use common::*;
use drydock::crypto::{self, ChunkKey, MaintenanceSecret};
use drydock::ids::sha256;
use drydock::repo::auth::{AuthKey, Authenticator};
use drydock::repo::blob::{BlobType, EncodedBlob};
use drydock::repo::config::RepoConfig;
use drydock::repo::pack::PackBuilder;
use drydock::repo::snapshot::{Envelope, Parts};
use drydock::repo::tree::RegistryEntry;

/// A repository with one real configuration snapshot; the source and the snapshot id.
fn real_backup(dir: &Path) -> (Repo, std::path::PathBuf, String) {
    let repo = local_repo(dir);
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("harbor.yml"), b"hostname: harbor.example\n").unwrap();
    fs::write(src.join("layer.bin"), noise(2 << 20, 5)).unwrap();
    let id = repo.backup(&[&src])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    (repo, src, id)
}

fn assert_restores(repo: &Repo, dir: &Path, src: &Path, id: &str, name: &str) {
    let out = dir.join(name);
    repo.id(&["restore", id, "--config-dir", out.to_str().unwrap()])
        .expect(0);
    assert_same_tree(src, &restored(&out, src));
}

fn config_path(repo: &Repo) -> std::path::PathBuf {
    repo.local_root.as_ref().unwrap().join("config")
}

/// The attack of format v1, without any key: manifests dated 2099 with no parts, encrypted
/// to the public recipient, wrapped as v2 snapshot objects with a made-up tag.
#[test]
fn snapshots_written_without_a_key_are_no_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src, real) = real_backup(dir.path());
    let config = RepoConfig::parse(&fs::read(config_path(&repo)).unwrap()).unwrap();
    let recipient = config.recipient().unwrap();
    let host = repo.id(&["--json", "show", "latest"]).json()["host"]
        .as_str()
        .unwrap()
        .to_string();
    let stranger = Authenticator::new(AuthKey::objects(&ChunkKey::generate()), config.id);
    let mut forged = Vec::new();
    for day in 0..15 {
        let t = Utc.with_ymd_and_hms(2099, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::days(day);
        let plain = serde_json::to_vec(&manifest(t, &host, Parts::default())).unwrap();
        let object = Envelope {
            manifest: crypto::encrypt(&recipient, &plain),
            summary: None,
            config: Some(config.to_bytes()),
        }
        .seal(&stranger);
        let name = hex::encode(sha256(&object));
        fs::write(
            repo.local_root
                .as_ref()
                .unwrap()
                .join("snapshots")
                .join(&name),
            object,
        )
        .unwrap();
        forged.push(name);
    }
    // `latest` and the listing skip them; the deployed retention cannot count them.
    let latest = repo.id(&["--json", "show", "latest"]).json();
    assert_eq!(latest["id"].as_str().unwrap(), real, "{latest}");
    repo.deployed_forget_and_prune();
    let check = repo.id(&["--json", "check", "--read-data"]);
    assert_eq!(check.code, 4, "{}", check.stdout);
    for name in &forged {
        assert!(
            check.stdout.contains(name),
            "{name} not named: {}",
            check.stdout
        );
    }
    assert!(check.stdout.contains("not authentic"), "{}", check.stdout);
    assert!(!check.stdout.contains(&real[..16]), "{}", check.stdout);
    assert_restores(&repo, dir.path(), &src, &real, "out");
}

/// The chunker of the reported attack (64/256/1024 bytes), written into `config` without a
/// key: both keys refuse the config, the refused backup writes nothing, and `key
/// recover-config` puts the real one back.
#[test]
fn an_altered_config_is_refused_and_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src, real) = real_backup(dir.path());
    let path = config_path(&repo);
    let pristine = fs::read(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&pristine).unwrap();
    v["chunker"]["min_size"] = 64.into();
    v["chunker"]["avg_size"] = 256.into();
    v["chunker"]["max_size"] = 1024.into();
    fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let objects_before = walk(repo.local_root.as_ref().unwrap()).len();
    let backup = repo.bk(&["backup", "--config", src.to_str().unwrap()]);
    backup.expect_error(4, "not authentic");
    assert_eq!(
        walk(repo.local_root.as_ref().unwrap()).len(),
        objects_before
    );
    repo.id(&["snapshots"]).expect_error(4, "recover-config");
    let recovered = repo.id(&["--json", "key", "recover-config"]);
    recovered.expect(0);
    assert_eq!(recovered.json()["written"], true, "{}", recovered.stdout);
    let back: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(back["chunker"]["min_size"], 262144);
    repo.bk(&["backup", "--config", src.to_str().unwrap()])
        .expect(0);
    repo.id(&["check", "--read-data"]).expect(0);
    assert_restores(&repo, dir.path(), &src, &real, "out");
}

/// A whole new config from a bucket writer: its own chunk key (and so its own key check and
/// object tag) sealed to the real recipient, the real id, and the real identity tag copied.
/// Age proves nothing about who sealed a key, so only the identity tag stops this.
#[test]
fn a_replaced_config_cannot_hand_the_identity_a_chunk_key() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src, real) = real_backup(dir.path());
    let path = config_path(&repo);
    let real_config = RepoConfig::parse(&fs::read(&path).unwrap()).unwrap();
    let theirs = ChunkKey::generate();
    let mut forged = RepoConfig::new(
        &real_config.recipient().unwrap(),
        &theirs,
        &MaintenanceSecret::generate(),
        None,
        None,
    );
    forged.id = real_config.id;
    forged.key_check = theirs.check_value(&forged.id);
    forged.seal(&theirs, None);
    forged.identity_auth = real_config.identity_auth.clone();
    fs::write(&path, forged.to_bytes()).unwrap();
    repo.id(&[
        "restore",
        "latest",
        "--config-dir",
        dir.path().join("x").to_str().unwrap(),
    ])
    .expect_error(4, "not authentic");
    // Without the copied tag the identity refuses too, and says what to run.
    forged.identity_auth = None;
    fs::write(&path, forged.to_bytes()).unwrap();
    repo.id(&["snapshots"]).expect_error(4, "recover-config");
    repo.id(&["key", "recover-config"]).expect(0);
    let back = RepoConfig::parse(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(back.key_check, real_config.key_check);
    repo.id(&["check", "--read-data"]).expect(0);
    assert_restores(&repo, dir.path(), &src, &real, "out");
}

#[test]
fn a_lost_config_is_rebuilt_from_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src, real) = real_backup(dir.path());
    fs::remove_file(config_path(&repo)).unwrap();
    repo.id(&["snapshots"]).expect_error(4, "recover-config");
    // The backup-only key cannot rebuild it.
    repo.bk(&["key", "recover-config"])
        .expect_error(5, "identity");
    let r = repo.id(&["--json", "key", "recover-config"]);
    r.expect(0);
    assert!(
        r.json()["from"].as_str().unwrap().starts_with("snapshots/"),
        "{}",
        r.stdout
    );
    repo.id(&["key", "recover-config"]).expect(0);
    repo.bk(&["backup", "--config", src.to_str().unwrap()])
        .expect(0);
    repo.id(&["check", "--read-data"]).expect(0);
    assert_restores(&repo, dir.path(), &src, &real, "out");
}

/// `init --recipient` has only the public key, so the identity must vouch for the config
/// once before it reads anything.
#[test]
fn a_recipient_only_repository_is_vouched_for_once() {
    let dir = tempfile::tempdir().unwrap();
    let r = RecipientOnly::new(dir.path());
    assert!(
        r.init_output.contains("recover-config"),
        "{}",
        r.init_output
    );
    r.with(
        &r.backup_key,
        &["backup", "--config", r.src.to_str().unwrap()],
    )
    .expect(0);
    let id = &r.repo.identity;
    r.with(id, &["snapshots"]).expect_error(4, "recover-config");
    r.with(id, &["key", "recover-config"]).expect(0);
    r.with(id, &["check", "--read-data"]).expect(0);
}

/// A repository made by `init --recipient` with the public key of `repo`'s identity, and a
/// small source directory.
struct RecipientOnly {
    _local: Repo,
    repo: Repo,
    backup_key: std::path::PathBuf,
    root: std::path::PathBuf,
    src: std::path::PathBuf,
    init_output: String,
}

impl RecipientOnly {
    fn new(dir: &Path) -> RecipientOnly {
        let local = local_repo(dir);
        let public = fs::read_to_string(&local.identity)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
            .unwrap();
        let root = dir.join("other");
        let backup_key = dir.join("other.key");
        let init = run(&[
            "--repo",
            root.to_str().unwrap(),
            "init",
            "--recipient",
            &public,
            "--backup-key-out",
            backup_key.to_str().unwrap(),
        ]);
        init.expect(0);
        let src = dir.join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("a"), b"a").unwrap();
        RecipientOnly {
            repo: Repo {
                args: vec!["--repo".into(), root.to_str().unwrap().into()],
                identity: local.identity.clone(),
                backup_key: backup_key.clone(),
                local_root: Some(root.clone()),
                s3: None,
            },
            _local: local,
            backup_key,
            root,
            src,
            init_output: init.stdout,
        }
    }

    fn with(&self, key: &Path, args: &[&str]) -> Run {
        let mut all = vec![
            "--repo",
            self.root.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        run(&all)
    }
}

/// A pack left unindexed, as a killed backup leaves one, but written without a key: the next
/// backup does not adopt it, and `check` does not count it as holding anything.
#[test]
fn a_pack_written_without_a_key_is_never_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src, real) = real_backup(dir.path());
    let config = RepoConfig::parse(&fs::read(config_path(&repo)).unwrap()).unwrap();
    let stranger = Authenticator::new(AuthKey::objects(&ChunkKey::generate()), config.id);
    let mut b = PackBuilder::default();
    b.add(EncodedBlob {
        blob_type: BlobType::Data,
        id: drydock::ids::BlobId([7; 32]),
        raw_length: 3,
        bytes: crypto::encrypt(&config.recipient().unwrap(), b"\0abc"),
        lookup: None,
    });
    let p = b.finish(&stranger);
    let hex = p.id.to_hex();
    let path = repo
        .local_root
        .as_ref()
        .unwrap()
        .join("packs")
        .join(&hex[..2]);
    fs::create_dir_all(&path).unwrap();
    fs::write(path.join(&hex), &p.bytes).unwrap();
    let r = repo.bk(&["backup", "--config", src.to_str().unwrap()]);
    r.expect(0);
    assert!(r.stderr.contains("not adopting"), "{}", r.stderr);
    let auth = attacker_auth(&repo);
    for f in walk(&repo.local_root.as_ref().unwrap().join("index")) {
        if f.is_file() {
            let listed = drydock::repo::index::parse(&fs::read(&f).unwrap(), &auth).unwrap();
            assert!(
                listed.iter().all(|(pack, _)| *pack != p.id),
                "adopted: {f:?}"
            );
        }
    }
    assert_restores(&repo, dir.path(), &src, &real, "out");
}

/// With the backup-only key, a registry blob for a stored digest with an empty chunk list
/// (the v1 attack): its id now covers its body, so it is another blob, no copy of the real
/// one, and the real snapshot keeps every layer through the deployed forget and prune.
#[test]
fn a_registry_blob_with_an_empty_chunk_list_cannot_steer_prune() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let reg = dir.path().join("registry");
    let digests = registry_tree_with_layers(&reg, 3, 1 << 20);
    let real = repo
        .bk(&["--json", "backup", "--registry-fs", reg.to_str().unwrap()])
        .json()["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let packs_before = walk(&repo.local_root.as_ref().unwrap().join("packs"));
    let digest = digests[0].clone();
    let digests_kept = digests.clone();
    forge_raw(
        &repo,
        move |r| {
            let entry = RegistryEntry {
                digest: digest.clone(),
                size: 0,
                content: vec![],
            };
            let data = entry.to_bytes();
            let mut e = drydock::repo::blob::encode(
                r.keys.chunk_key("test").unwrap(),
                &r.keys.recipient,
                BlobType::Registry,
                &data,
                3,
            );
            e.lookup = Some(drydock::repo::blob::lookup_key(
                r.keys.chunk_key("test").unwrap(),
                &digest,
            ));
            vec![e]
        },
        |_, _| Vec::new(),
    );
    repo.deployed_forget_and_prune();
    for p in &packs_before {
        assert!(p.exists(), "prune deleted a real pack: {}", p.display());
    }
    // The next backup does not trust the disputed digest: it reads the layer again and
    // finds the real registry blob.
    let next = repo.bk(&["--json", "backup", "--registry-fs", reg.to_str().unwrap()]);
    next.expect(0);
    for id in [real.as_str(), next.json()["snapshot"].as_str().unwrap()] {
        let out = dir.path().join(format!("out-{}", &id[..8]));
        repo.id(&["restore", id, "--registry-fs", out.to_str().unwrap()])
            .expect(0);
        for d in &digests_kept {
            let hex = &d[7..];
            let blob = format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]);
            assert_eq!(
                fs::read(reg.join(&blob)).unwrap(),
                fs::read(out.join(&blob)).unwrap()
            );
        }
    }
}

/// The small-file oracle of format v1: a Secret value under 256 KiB was one chunk, so a holder
/// of the backup-only key could confirm a guess against its keyed id, and the index showed
/// its exact length. Small configuration files are now sealed (FORMAT.md §5).
#[test]
fn a_small_secret_is_no_oracle_and_its_length_does_not_show() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let src = dir.path().join("secret");
    fs::create_dir_all(&src).unwrap();
    let value = b"Harbor12345ABCDE"; // 16 bytes
    fs::write(src.join("password"), value).unwrap();
    fs::write(src.join("user"), b"admin").unwrap();
    let id = repo.backup(&[&src])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    // The attacker's guess, computed as v1 ids were, with the backup-only key.
    let ck = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            attacker(&repo)
                .await
                .keys
                .chunk_key("test")
                .unwrap()
                .clone()
        })
    };
    let guess = ck.blob_id(BlobType::Data as u8, value);
    let auth = attacker_auth(&repo);
    let mut data_lengths = Vec::new();
    for f in walk(&repo.local_root.as_ref().unwrap().join("index")) {
        if !f.is_file() {
            continue;
        }
        for (_, entries) in drydock::repo::index::parse(&fs::read(&f).unwrap(), &auth).unwrap() {
            for e in entries {
                assert_ne!(e.id, guess, "the guess matches a stored blob");
                if e.blob_type == BlobType::Data {
                    data_lengths.push((e.raw_length, e.length));
                }
            }
        }
    }
    // Both files (16 and 5 bytes) are 512-byte plaintexts, stored uncompressed: their stored
    // sizes differ only by age's random grease stanza (13–190 bytes), not by content.
    assert_eq!(data_lengths.len(), 2, "{data_lengths:?}");
    assert!(
        data_lengths
            .iter()
            .all(|&(raw, stored)| raw == 512 && stored > 512),
        "{data_lengths:?}"
    );
    assert!(
        data_lengths[0].1.abs_diff(data_lengths[1].1) <= 190,
        "{data_lengths:?}"
    );
    // A second backup of the same files stores them again under new ids: no dedup across
    // snapshots, so an id never says "this value was there before".
    let again = repo.backup(&[&src]);
    assert!(
        again["summary"]["new_blobs"].as_u64().unwrap() >= 2,
        "{again}"
    );
    // They restore byte for byte, and verify compares their content.
    let out = dir.path().join("out");
    repo.id(&["restore", &id, "--config-dir", out.to_str().unwrap()])
        .expect(0);
    assert_same_tree(&src, &restored(&out, &src));
    repo.id(&["verify", &id, "--config-dir", out.to_str().unwrap()])
        .expect(0);
    fs::write(restored(&out, &src).join("password"), b"Harbor12345ABCDX").unwrap();
    let v = repo.id(&["verify", &id, "--config-dir", out.to_str().unwrap()]);
    assert_eq!(v.code, 1, "{}", v.stdout);
    assert!(v.stdout.contains("content differs"), "{}", v.stdout);
}

/// A byte-for-byte copy of a real pack under a false name (no key needed): its header and
/// blobs authenticate, so only its name gives it away. Prune must not let it stand in for the
/// real pack, nor a backup adopt it, and `check --read-data` names it.
#[test]
fn a_pack_copied_under_a_false_name_cannot_replace_the_real_one() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src, real) = real_backup(dir.path());
    let root = repo.local_root.clone().unwrap();
    let real_packs: Vec<_> = walk(&root.join("packs"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    let fake_dir = root.join("packs/00");
    let plant = || -> Vec<std::path::PathBuf> {
        fs::create_dir_all(&fake_dir).unwrap();
        // Names that sort before the real ones.
        let fakes: Vec<_> = (0..real_packs.len())
            .map(|i| fake_dir.join(format!("{i:064x}")))
            .collect();
        for (p, fake) in real_packs.iter().zip(&fakes) {
            fs::copy(p, fake).unwrap();
        }
        fakes
    };
    // Prune keeps the real packs and treats the copies as the unused objects they are.
    let fakes = plant();
    repo.deployed_forget_and_prune();
    for p in &real_packs {
        assert!(p.exists(), "prune deleted a real pack: {}", p.display());
    }
    assert!(
        fakes.iter().all(|f| !f.exists()),
        "the copies were not pruned"
    );
    // A backup does not adopt them; check names every one.
    let fakes = plant();
    let r = repo.bk(&["backup", "--config", src.to_str().unwrap()]);
    r.expect(0);
    assert!(r.stderr.contains("does not match its name"), "{}", r.stderr);
    let check = repo.id(&["--json", "check", "--read-data"]);
    assert_eq!(check.code, 4, "{}", check.stdout);
    for fake in &fakes {
        let name = fake.file_name().unwrap().to_str().unwrap();
        assert!(check.stdout.contains(name), "{name}: {}", check.stdout);
        fs::remove_file(fake).unwrap();
    }
    repo.id(&["check", "--read-data"]).expect(0);
    assert_restores(&repo, dir.path(), &src, &real, "out");
}

/// A real snapshot object copied under a false name is no snapshot: retention goes on, and
/// `check` names the copy.
#[test]
fn a_snapshot_copied_under_a_false_name_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src, real) = real_backup(dir.path());
    let snaps = repo.local_root.as_ref().unwrap().join("snapshots");
    let fake = snaps.join("0".repeat(64));
    fs::copy(snaps.join(&real), &fake).unwrap();
    repo.deployed_forget_and_prune();
    let check = repo.id(&["--json", "check"]);
    assert_eq!(check.code, 4, "{}", check.stdout);
    assert!(check.stdout.contains(&"0".repeat(64)), "{}", check.stdout);
    fs::remove_file(fake).unwrap();
    assert_restores(&repo, dir.path(), &src, &real, "out");
}

/// `"object_lock": ""` reads like an absent field in the authenticated text; it must not
/// switch anything on, so the config is damaged, and recovery rebuilds it.
#[test]
fn an_empty_reserved_field_is_damage_not_a_setting() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src, real) = real_backup(dir.path());
    let path = config_path(&repo);
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    v["object_lock"] = "".into();
    fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    repo.bk(&["backup", "--config", src.to_str().unwrap()])
        .expect_error(4, "config");
    repo.id(&["key", "recover-config"]).expect(0);
    repo.bk(&["backup", "--config", src.to_str().unwrap()])
        .expect(0);
    assert_restores(&repo, dir.path(), &src, &real, "out");
}

/// In a repository from `init --recipient` nothing carries the identity's tag yet, so a
/// holder of the backup-only key can write a snapshot whose config copy differs (here: its
/// own maintenance secret and zstd level). Recovery refuses to choose between copies that
/// disagree, and vouching never keeps a maintenance secret someone else sealed.
#[test]
fn recovery_does_not_vouch_for_a_config_copy_a_backup_key_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let r = RecipientOnly::new(dir.path());
    let (other, bk, repo) = (&r.root, &r.backup_key, &r.repo);
    let with = |key: &Path, args: &[&str]| r.with(key, args);
    with(bk, &["backup", "--config", r.src.to_str().unwrap()]).expect(0);
    let config_path = other.join("config");
    let real = RepoConfig::parse(&fs::read(&config_path).unwrap()).unwrap();
    // The backup-only key's forgery: same id and chunk key, its own parameters.
    let crypto::KeyFile::BackupOnly(k) = crypto::KeyFile::load(bk).unwrap() else {
        panic!("not a backup-only key");
    };
    let mut forged = real.clone();
    forged.zstd_level = 19;
    forged
        .reseal_maintenance(&MaintenanceSecret::generate())
        .unwrap();
    forged.seal(&k.chunk_key, None);
    let auth = Authenticator::new(AuthKey::objects(&k.chunk_key), real.id);
    let plain = serde_json::to_vec(&manifest(Utc::now(), "x", Parts::default())).unwrap();
    let object = Envelope {
        manifest: crypto::encrypt(&k.recipient, &plain),
        summary: None,
        config: Some(forged.to_bytes()),
    }
    .seal(&auth);
    let forged_object = other.join("snapshots").join(hex::encode(sha256(&object)));
    fs::write(&forged_object, object).unwrap();
    with(&repo.identity, &["key", "recover-config"]).expect_error(4, "disagree");
    assert_eq!(fs::read(&config_path).unwrap(), real.to_bytes());
    // Without the forgery the identity vouches, with a maintenance secret of its own.
    fs::remove_file(&forged_object).unwrap();
    with(&repo.identity, &["key", "recover-config"]).expect(0);
    let vouched = RepoConfig::parse(&fs::read(&config_path).unwrap()).unwrap();
    assert_eq!(vouched.zstd_level, real.zstd_level);
    assert_ne!(
        vouched.sealed_maintenance_secret,
        real.sealed_maintenance_secret
    );
    with(&repo.identity, &["check", "--read-data"]).expect(0);
}

/// A garbage object under `index/` (no key needed) stops no command: backup, show, verify
/// and restore skip it with a warning, and `check` names it.
#[test]
fn a_planted_index_object_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, src, real) = real_backup(dir.path());
    let junk = b"DDINDX02 not an index";
    let path = repo
        .local_root
        .as_ref()
        .unwrap()
        .join("index")
        .join(hex::encode(sha256(junk)));
    fs::write(&path, junk).unwrap();
    let b = repo.bk(&["backup", "--config", src.to_str().unwrap()]);
    b.expect(0);
    assert!(b.stderr.contains("not authentic"), "{}", b.stderr);
    repo.id(&["show", &real]).expect(0);
    assert_restores(&repo, dir.path(), &src, &real, "out");
    let check = repo.id(&["--json", "check"]);
    assert_eq!(check.code, 4, "{}", check.stdout);
    assert!(
        check.stdout.contains(&hex::encode(sha256(junk))),
        "{}",
        check.stdout
    );
}

/// With the backup-only key, a registry blob for a real digest whose chunk is other content
/// (a poisoned layer for later backups to reuse). `check --read-data` hashes every registry
/// blob's chunks and names it; the real snapshot still checks and restores.
#[test]
fn check_read_data_names_a_registry_blob_whose_chunks_do_not_hash_to_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let reg = dir.path().join("registry");
    let digests = registry_tree_with_layers(&reg, 1, 300 << 10);
    repo.bk(&["--json", "backup", "--registry-fs", reg.to_str().unwrap()])
        .expect(0);
    repo.id(&["check", "--read-data"]).expect(0);
    let digest = digests[0].clone();
    forge_raw(
        &repo,
        move |r| {
            let ck = r.keys.chunk_key("test").unwrap();
            let poison = noise(300 << 10, 4242);
            let chunk =
                drydock::repo::blob::encode(ck, &r.keys.recipient, BlobType::Data, &poison, 3);
            let body = RegistryEntry {
                digest: digest.clone(),
                size: poison.len() as u64,
                content: vec![chunk.id],
            }
            .to_bytes();
            let mut e =
                drydock::repo::blob::encode(ck, &r.keys.recipient, BlobType::Registry, &body, 3);
            e.lookup = Some(drydock::repo::blob::lookup_key(ck, &digest));
            vec![chunk, e]
        },
        |_, _| Vec::new(),
    );
    let r = repo.id(&["check", "--read-data"]);
    r.expect(4);
    assert!(
        r.stdout.contains("do not hash to its digest"),
        "{}",
        r.stdout
    );
    let out = dir.path().join("out");
    repo.id(&["restore", "latest", "--registry-fs", out.to_str().unwrap()])
        .expect(0);
}
