//! Writes the seed corpus (`fuzz/corpus/<target>/`) from a repository that `drydock` wrote.
//!
//! Run by `fuzz/gen-corpus`, which makes the repository (init to the test recipient, two
//! backups, forget, prune) and then runs this with `--ignored`. It reads the objects as
//! files of the local repository, decrypts them with the test identity and writes each
//! parser's input: the plaintext, so the fuzzer starts inside the structure.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use drydock::crypto::{self, identity_file_text};
use drydock::harbor::db::{DatabasePart, SequenceEntry, TableEntry};
use drydock::ids::{sha256, BlobId};
use drydock::repo::blob::{self, BlobType};
use drydock::repo::config::RepoConfig;
use drydock::repo::pack::{self, PackEntry, TRAILER_LEN};
use drydock::repo::auth::{AuthKey, Authenticator};
use drydock::repo::snapshot::{Envelope, Snapshot};
use drydock::repo::tree::RegistryEntry;

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| panic!("{name} is not set")))
}

/// All files under `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

struct Corpus {
    root: PathBuf,
    counts: BTreeMap<&'static str, usize>,
}

impl Corpus {
    /// Write one seed, named by its content so that reruns do not pile up duplicates.
    fn add(&mut self, target: &'static str, bytes: &[u8]) {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).unwrap();
        let name = hex(&sha256(bytes)[..8]);
        fs::write(dir.join(name), bytes).unwrap();
        *self.counts.entry(target).or_default() += 1;
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn blob_seed(blob_type: BlobType, raw_length: u32, framed: &[u8]) -> Vec<u8> {
    let mut seed = vec![blob_type as u8];
    seed.extend_from_slice(&raw_length.to_le_bytes());
    seed.extend_from_slice(framed);
    seed
}

#[test]
#[ignore = "run by fuzz/gen-corpus"]
fn write_seed_corpus() {
    let repo = env_path("DRYDOCK_FUZZ_REPO");
    let backup_key = env_path("DRYDOCK_FUZZ_BACKUP_KEY");
    let bsl = env_path("DRYDOCK_FUZZ_BSL");
    let mut corpus = Corpus {
        root: env_path("DRYDOCK_FUZZ_CORPUS"),
        counts: BTreeMap::new(),
    };
    let identity = drydock_fuzz::identity();

    // config, and its chunk key (sealed to the test identity) to check blob ids with.
    let config_bytes = fs::read(repo.join("config")).unwrap();
    let config = RepoConfig::parse(&config_bytes).unwrap();
    let chunk_key = config.unseal(&identity).unwrap().chunk_key;
    let auth = Authenticator::new(AuthKey::objects(&chunk_key), config.id);
    corpus.add("config", &config_bytes);

    // Key files: the test identity as drydock writes it, the backup-only key init wrote.
    corpus.add("key_file", identity_file_text(&identity).as_bytes());
    corpus.add("key_file", &fs::read(&backup_key).unwrap());

    corpus.add("bsl", &fs::read(&bsl).unwrap());

    // The index, pack header and deletions targets tag their input themselves: seeds are
    // the objects without their tags.
    for p in files(&repo.join("index")) {
        let bytes = fs::read(p).unwrap();
        corpus.add("index", &bytes[..bytes.len() - 32]);
    }
    for p in files(&repo.join("deletions")) {
        let bytes = fs::read(p).unwrap();
        corpus.add("deletions", &bytes[..bytes.len() - 32]);
    }

    // Packs: the header of each; every blob decrypted by type; a few envelopes.
    let mut envelopes = 0;
    let mut blob_seeds: BTreeMap<(u8, u8), Vec<u8>> = BTreeMap::new();
    let mut plaintexts: BTreeMap<BlobId, (BlobType, Vec<u8>)> = BTreeMap::new();
    for p in files(&repo.join("packs")) {
        let bytes = fs::read(&p).unwrap();
        let len = bytes.len() as u64;
        let hl = pack::header_len(&bytes[bytes.len() - TRAILER_LEN..], len).unwrap();
        let header = &bytes[bytes.len() - hl..];
        let entries: Vec<PackEntry> = pack::parse_header(header, len, &auth).unwrap();
        let mut seed = (len - hl as u64).to_le_bytes().to_vec();
        seed.extend_from_slice(&header[..hl - TRAILER_LEN]);
        corpus.add("pack_header", &seed);
        for e in entries {
            let stored = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            let data = blob::decode(
                &identity,
                &chunk_key,
                e.blob_type,
                &e.id,
                e.raw_length,
                stored,
            )
            .unwrap();
            // One seed per (type, compression) for the blob target: the framed plaintext.
            let framed = crypto::decrypt(&identity, stored).unwrap();
            if framed.len() <= 4096 {
                blob_seeds
                    .entry((e.blob_type as u8, framed[0]))
                    .or_insert_with(|| blob_seed(e.blob_type, e.raw_length, &framed));
            }
            if envelopes < 2 && stored.len() <= 4096 {
                corpus.add("envelope", stored);
                envelopes += 1;
            }
            plaintexts.insert(e.id, (e.blob_type, data));
        }
    }
    for seed in blob_seeds.values() {
        corpus.add("blob", seed);
    }
    for (blob_type, data) in plaintexts.values() {
        match blob_type {
            BlobType::Tree => corpus.add("tree", data),
            BlobType::Registry => corpus.add("registry_blob", data),
            BlobType::Data => {}
        }
    }

    // Snapshots: the decrypted manifests (and one sealed one for the envelope target).
    let mut last = None;
    for p in files(&repo.join("snapshots")) {
        let object = fs::read(&p).unwrap();
        corpus.add("envelope", &object[8..object.len() - 32]);
        let sealed = Envelope::open(&object, &auth, "snapshot").unwrap().manifest;
        let plain = crypto::decrypt(&identity, &sealed).unwrap();
        let snap = Snapshot::parse(&plain, "snapshot").unwrap();
        if let Some(reg) = &snap.parts.registry {
            let mut links = Vec::new();
            for id in &reg.links {
                links.extend_from_slice(&plaintexts[id].1);
            }
            corpus.add("link_list", &links);
        }
        corpus.add("snapshot", &plain);
        if envelopes < 3 {
            corpus.add("envelope", &sealed);
            envelopes += 1;
        }
        last = Some(snap);
    }

    // A database part needs a PostgreSQL server; give one snapshot seed a small one, as
    // drydock writes it.
    let mut snap = last.expect("the repository has a snapshot");
    let table = |name: &str, columns: &[&str]| TableEntry {
        schema: "public".into(),
        name: name.into(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows: 3,
        bytes: 120,
        checksum: hex(&sha256(name.as_bytes())),
    };
    snap.parts.database = Some(DatabasePart {
        server_version: "15.8".into(),
        server_version_num: 150008,
        database: "registry".into(),
        pg_dump_version: "pg_dump (PostgreSQL) 15.8".into(),
        harbor_schema_version: Some(140),
        harbor_schema_dirty: Some(false),
        tree: chunk_key.blob_id(BlobType::Tree as u8, b"{}"),
        tables: vec![
            table("project", &["project_id", "name"]),
            table("repository", &["repository_id", "project_id", "name"]),
        ],
        sequences: vec![SequenceEntry {
            schema: "public".into(),
            name: "project_project_id_seq".into(),
            last_value: 3,
            is_called: true,
        }],
        foreign_keys: vec![(1, 0)],
    });
    corpus.add("snapshot", &serde_json::to_vec(&snap).unwrap());

    // Fallback if the registry part was not backed up: one registry blob as drydock writes it.
    if !corpus.counts.contains_key("registry_blob") {
        let entry = RegistryEntry {
            digest: format!("sha256:{}", hex(&sha256(b"layer"))),
            size: 5,
            content: vec![chunk_key.blob_id(BlobType::Data as u8, b"layer")],
        };
        corpus.add("registry_blob", &entry.to_bytes());
    }

    for (target, n) in &corpus.counts {
        eprintln!("{target}: {n} seeds");
    }
}
