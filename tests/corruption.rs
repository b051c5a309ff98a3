//! Corruption sweep (issue 7): every object of a small repository — `config`, every index
//! object, every pack, every snapshot and the `deletions/` record — is damaged three ways
//! (one bit flipped at a seeded random offset, cut to a seeded random length, deleted; the
//! first two `ROUNDS` times at different places; for every pack also one flip aimed at a
//! blob's age header), each in a fresh copy of the repository. For every case:
//!
//! - `check --read-data` must find the damage (exit 4) and name exactly the snapshots it
//!   damages, worked out here from the repository's own layout (which blobs each snapshot
//!   reaches, which pack and byte range holds each blob, which index names each pack);
//! - every snapshot is then restored: one whose data is damaged must fail with exit 4; one
//!   whose data is intact must restore byte for byte; and whatever the outcome, no file in
//!   the target may hold content the source did not have.
//!
//! Damage that no reader can tell from a legitimate state is documented, not detected, and
//! the sweep checks it is harmless instead: a deleted snapshot object looks like a forgotten
//! snapshot, a deleted `deletions/` record like a prune that never ran (FORMAT.md §13), and
//! a flip that changes only layout (a space in `config`, the case of a hex digit) changes
//! nothing any restore reads. Every field is authenticated (format 2), so any other flip
//! in `config` or a record is detected.
//!
//! The seed is printed; `DRYDOCK_TEST_SEED=<n>` (decimal or 0x-hex) replays its choices of
//! offsets, lengths and blobs. The repository is new each run (fresh keys, fresh age
//! nonces), so the same seed hits the same relative places in different bytes.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;
use drydock::crypto::KeyFile;
use drydock::ids::{BlobId, PackId};
use drydock::repo::index::MasterIndex;
use drydock::repo::pack::PackEntry;
use drydock::repo::reader::BlobReader;
use drydock::repo::snapshot::Snapshot;
use drydock::repo::Repository;
use drydock::store::{open, Location, S3Options};

const DEFAULT_SEED: u64 = 0x00d2_7d0c_c0ff_ee07;
/// Seeded flips and seeded cuts per object (plus its deletion).
const ROUNDS: usize = 3;

fn seed() -> u64 {
    let seed = match std::env::var("DRYDOCK_TEST_SEED") {
        Ok(s) if !s.trim().is_empty() => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("DRYDOCK_TEST_SEED={s:?} is not a number"))
        }
        _ => DEFAULT_SEED,
    };
    println!("corruption sweep: DRYDOCK_TEST_SEED={seed:#x}");
    seed
}

// ------------------------------------------------------------------ the repository

/// What a restore target must hold: a file's bytes or a symlink's target.
#[derive(Clone, Debug, PartialEq)]
enum Entry {
    File(Vec<u8>),
    Link(PathBuf),
}

/// Paths relative to the restore work directory: `config/<absolute source path>` and
/// `registry/<path under the registry root>`.
type Expected = BTreeMap<PathBuf, Entry>;

struct Snap {
    full: String,
    short: String,
    label: &'static str,
    has_registry: bool,
    expected: Expected,
    /// Every blob (data, tree, registry) a restore of this snapshot reads.
    reaches: HashSet<BlobId>,
}

struct Pack {
    key: String,
    entries: Vec<PackEntry>,
}

struct Index {
    key: String,
    packs: Vec<PackId>,
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    identity: PathBuf,
    backup_key: PathBuf,
    /// A small directory a backup can save when the sweep asks "does backup still run?".
    small_src: PathBuf,
    snaps: Vec<Snap>,
    packs: Vec<Pack>,
    indexes: Vec<Index>,
    deletions: Vec<String>,
}

impl Fixture {
    fn repo(&self, root: &Path) -> Repo {
        Repo {
            args: vec!["--repo".into(), root.to_str().unwrap().into()],
            identity: self.identity.clone(),
            backup_key: self.backup_key.clone(),
            local_root: Some(root.to_path_buf()),
            s3: None,
        }
    }

    /// Snapshots (short ids) that reach any of `blobs`.
    fn reaching(&self, blobs: &HashSet<BlobId>) -> BTreeSet<String> {
        self.snaps
            .iter()
            .filter(|s| !s.reaches.is_disjoint(blobs))
            .map(|s| s.short.clone())
            .collect()
    }
}

/// Record what a restore of these sources must produce.
fn capture(config: &[&Path], registry: Option<&Path>) -> Expected {
    let mut out = Expected::new();
    let mut add = |p: &Path, key: PathBuf| {
        let meta = fs::symlink_metadata(p).unwrap();
        if meta.file_type().is_symlink() {
            out.insert(key, Entry::Link(fs::read_link(p).unwrap()));
        } else if meta.is_file() {
            out.insert(key, Entry::File(fs::read(p).unwrap()));
        }
    };
    for root in config {
        for p in std::iter::once(root.to_path_buf()).chain(walk(root)) {
            add(&p, Path::new("config").join(p.strip_prefix("/").unwrap()));
        }
    }
    if let Some(reg) = registry {
        for p in walk(reg) {
            add(&p, Path::new("registry").join(p.strip_prefix(reg).unwrap()));
        }
    }
    out
}

/// A filesystem registry root as the distribution registry lays it out: two layers and a
/// manifest, linked from a repository and a tag.
fn registry_tree(root: &Path) {
    use sha2::Digest as _;
    let v2 = root.join("docker/registry/v2");
    let mut digests = Vec::new();
    let layer = noise(400_000, 21);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let mut blobs = vec![layer, config];
    let manifest = format!(
        r#"{{"schemaVersion":2,"layers":[{{"digest":"sha256:{}"}}]}}"#,
        hex::encode(sha2::Sha256::digest(&blobs[0]))
    );
    blobs.push(manifest.into_bytes());
    for b in &blobs {
        let hex = hex::encode(sha2::Sha256::digest(b));
        let dir = v2.join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("data"), b).unwrap();
        digests.push(hex);
    }
    let repo = v2.join("repositories/library/app");
    let link = |rel: String, hex: &str| {
        let p = repo.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, format!("sha256:{hex}")).unwrap();
    };
    for hex in &digests[..2] {
        link(format!("_layers/sha256/{hex}/link"), hex);
    }
    let m = &digests[2];
    link(format!("_manifests/revisions/sha256/{m}/link"), m);
    link("_manifests/tags/v1/current/link".to_string(), m);
    link(format!("_manifests/tags/v1/index/sha256/{m}/link"), m);
}

/// Make the repository small: 1 MiB packs (the smallest the format allows) and 256 KiB
/// chunks, so a few MiB of sources give several packs and multi-chunk files. No option sets
/// these, and the config is authenticated, so the identity tags it again (FORMAT.md §4).
fn shrink(repo: &Repo) {
    reseal_config(repo, |v| {
        v["pack_size"] = (1u64 << 20).into();
        v["chunker"]["min_size"] = (64u64 << 10).into();
        v["chunker"]["avg_size"] = (256u64 << 10).into();
        v["chunker"]["max_size"] = (1u64 << 20).into();
    });
}

fn backup(repo: &Repo, config: &[&Path], registry: Option<&Path>) -> String {
    let mut args = vec!["--json", "backup", "--parallel", "2"];
    for p in config {
        args.extend(["--config", p.to_str().unwrap()]);
    }
    if let Some(r) = registry {
        args.extend(["--registry-fs", r.to_str().unwrap()]);
    }
    let r = repo.bk(&args);
    r.expect(0);
    r.json()["snapshot"].as_str().unwrap().to_string()
}

fn build() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let root = repo.local_root.clone().unwrap();
    shrink(&repo);
    let src = dir.path().join("src");

    // D: unique data, forgotten and pruned below, so its packs end up in a deletion record.
    let doomed = src.join("doomed");
    fs::create_dir_all(&doomed).unwrap();
    fs::write(doomed.join("old.bin"), noise(1_100_000, 3)).unwrap();
    fs::write(doomed.join("old.txt"), "superseded\n").unwrap();
    let d = backup(&repo, &[&doomed], None);

    // A: a Harbor configuration tree (a 1.2 MB file, small files, unicode names, a Secret
    // volume with its ..data symlinks).
    let (etc, secret) = harbor_config_tree(&src.join("harbor"), 1_200_000);
    let a_expected = capture(&[&etc, &secret], None);
    let a = backup(&repo, &[&etc, &secret], None);

    // B: the same tree with harbor.yml changed, a unique directory and a registry part.
    fs::write(
        etc.join("harbor.yml"),
        "hostname: harbor.example.org\n".repeat(30),
    )
    .unwrap();
    let extra = src.join("extra");
    fs::create_dir_all(extra.join("sub")).unwrap();
    fs::write(extra.join("unique.bin"), noise(700_000, 5)).unwrap();
    fs::write(extra.join("sub/notes.txt"), "only in B\n".repeat(100)).unwrap();
    symlink("sub/notes.txt", extra.join("notes")).unwrap();
    let reg = src.join("registry");
    registry_tree(&reg);
    let b_expected = capture(&[&etc, &extra], Some(&reg));
    let b = backup(&repo, &[&etc, &extra], Some(&reg));

    // C: nothing new — B's configuration tree and A's Secret volume, all deduplicated.
    let c_expected = capture(&[&etc, &secret], None);
    let c = backup(&repo, &[&etc, &secret], None);

    repo.id(&["forget", "--keep-last", "3"]).expect(0);
    let pruned = repo.id(&["--json", "prune"]);
    pruned.expect(0);
    assert!(
        pruned.json()["marked"].as_u64().unwrap() > 0,
        "{}",
        pruned.stdout
    );
    let listed = repo.id(&["--json", "snapshots"]);
    listed.expect(0);
    assert!(!listed.stdout.contains(&d[..8]), "D was forgotten");

    let small_src = src.join("small");
    fs::create_dir_all(&small_src).unwrap();
    fs::write(small_src.join("f"), "a later backup\n").unwrap();

    let mut fx = Fixture {
        root: root.clone(),
        identity: repo.identity.clone(),
        backup_key: repo.backup_key.clone(),
        small_src,
        snaps: Vec::new(),
        packs: Vec::new(),
        indexes: Vec::new(),
        deletions: Vec::new(),
        _dir: dir,
    };
    let labelled = [
        (a, "A", false, a_expected),
        (b, "B", true, b_expected),
        (c, "C", false, c_expected),
    ];
    layout(&mut fx, labelled);
    fx
}

/// Every blob a restore of `snap` reads, found by walking its parts with the library's
/// reader (independently of the code under test: `check` and `prune`).
async fn reaches(reader: &BlobReader, snap: &Snapshot) -> HashSet<BlobId> {
    use drydock::repo::blob::BlobType;
    let mut seen = HashSet::new();
    let mut stack: Vec<(BlobId, BlobType)> = Vec::new();
    if let Some(c) = &snap.parts.config {
        for r in &c.roots {
            seen.extend(r.node.content.iter().copied());
            stack.extend(r.node.subtree.map(|t| (t, BlobType::Tree)));
        }
    }
    if let Some(r) = &snap.parts.registry {
        seen.extend(r.links.iter().copied());
        stack.push((r.blobs, BlobType::Tree));
    }
    for d in &snap.parts.databases {
        stack.push((d.tree, BlobType::Tree));
    }
    while let Some((id, t)) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        match t {
            BlobType::Tree => {
                for n in reader.load_tree(&id).await.unwrap().nodes {
                    seen.extend(n.content.iter().copied());
                    stack.extend(n.subtree.map(|t| (t, BlobType::Tree)));
                    stack.extend(n.registry.map(|r| (r, BlobType::Registry)));
                }
            }
            BlobType::Registry => {
                seen.extend(reader.load_registry(&id).await.unwrap().content);
            }
            BlobType::Data => {}
        }
    }
    seen
}

fn layout<const N: usize>(fx: &mut Fixture, labelled: [(String, &'static str, bool, Expected); N]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (root, identity) = (fx.root.clone(), fx.identity.clone());
    let (snaps, packs, indexes) = rt.block_on(async move {
        let store = open(&Location::Local(root), &S3Options::default())
            .await
            .unwrap();
        let key = KeyFile::load(&identity).unwrap();
        let repo = Arc::new(Repository::open(store, key).await.unwrap());
        let mut master = MasterIndex::default();
        let mut entries: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
        let mut indexes = Vec::new();
        for (id, file) in repo.load_index_files().await.unwrap() {
            let file = file.unwrap();
            let mut named = Vec::new();
            for (pack, e) in file {
                master.add_pack(pack, &e);
                entries.insert(pack, e);
                named.push(pack);
            }
            indexes.push(Index {
                key: format!("index/{}", id.to_hex()),
                packs: named,
            });
        }
        let mut packs = Vec::new();
        for (id, _) in repo.list_packs().await.unwrap() {
            packs.push(Pack {
                key: drydock::repo::pack::key(&id),
                entries: entries.remove(&id).expect("every pack is indexed"),
            });
        }
        let reader = BlobReader::new(repo.clone(), Arc::new(master), "the test").unwrap();
        let mut snaps = Vec::new();
        for (id, snap) in repo.load_snapshots().await.unwrap() {
            let snap = snap.unwrap();
            let (full, short) = (id.to_hex(), id.short());
            snaps.push((full, short, reaches(&reader, &snap).await));
        }
        (snaps, packs, indexes)
    });
    assert_eq!(snaps.len(), N);
    for (full, label, has_registry, expected) in labelled {
        let (_, short, reach) = snaps.iter().find(|(f, _, _)| *f == full).unwrap();
        fx.snaps.push(Snap {
            full,
            short: short.clone(),
            label,
            has_registry,
            expected,
            reaches: reach.clone(),
        });
    }
    fx.packs = packs;
    fx.indexes = indexes;
    fx.deletions = walk(&fx.root.join("deletions"))
        .into_iter()
        .map(|p| {
            p.strip_prefix(&fx.root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
}

// ------------------------------------------------------------------ damage and cases

#[derive(Clone, Copy, Debug)]
enum Damage {
    Flip { at: u64, mask: u8 },
    Truncate { to: u64 },
    Delete,
}

impl Damage {
    fn apply(self, path: &Path) {
        match self {
            Damage::Flip { at, mask } => {
                let mut b = fs::read(path).unwrap();
                b[at as usize] ^= mask;
                fs::write(path, b).unwrap();
            }
            Damage::Truncate { to } => {
                fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .unwrap()
                    .set_len(to)
                    .unwrap();
            }
            Damage::Delete => fs::remove_file(path).unwrap(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Damage::Flip { .. } => "flip",
            Damage::Truncate { .. } => "truncate",
            Damage::Delete => "delete",
        }
    }
}

#[derive(Clone, Debug)]
enum Expect {
    /// `check --read-data` exits 4, one of its problems names `key`, and the affected
    /// snapshots are exactly `named`. Restores of `broken` exit 4; restores of snapshots
    /// outside `named` succeed byte for byte; the others may do either.
    Detected {
        object: String,
        named: BTreeSet<String>,
        broken: BTreeSet<String>,
    },
    /// Not an error state: `check` exits 0 and every snapshot restores byte for byte (an
    /// index object of packs no snapshot uses, deleted: the packs look like those a killed
    /// backup leaves before its index is written).
    Harmless,
    /// `config`: exit 4 (damaged or not authentic), or 2 for a damaged `format`/`version`
    /// field (as for any directory that is not a version-2 repository), or 0 when only its
    /// layout changed — then every snapshot restores byte for byte.
    Config,
    /// A `deletions/` record: exit 4 naming it when it no longer parses or its tag fails
    /// (backup and prune go on without it), else exit 0; restores are never affected.
    Record,
    /// A deleted snapshot object: indistinguishable from a forgotten snapshot.
    SnapshotGone { short: String },
}

#[derive(Clone, Debug)]
struct Case {
    kind: &'static str,
    key: String,
    damage: Damage,
    expect: Expect,
}

fn blob_at(p: &Pack, at: u64) -> Option<&PackEntry> {
    p.entries
        .iter()
        .find(|e| (e.offset as u64..e.offset as u64 + e.length as u64).contains(&at))
}

fn cases(fx: &Fixture, rng: &mut Rng) -> Vec<Case> {
    let mut out = Vec::new();
    let size = |key: &str| fs::metadata(fx.root.join(key)).unwrap().len();
    // ROUNDS flips and ROUNDS cuts at seeded random places, and the deletion.
    let damages = |rng: &mut Rng, key: &str| -> Vec<Damage> {
        let n = size(key);
        let mut v = Vec::new();
        for _ in 0..ROUNDS {
            v.push(Damage::Flip {
                at: rng.below(n),
                mask: 1 << rng.below(8),
            });
        }
        for _ in 0..ROUNDS {
            v.push(Damage::Truncate { to: rng.below(n) });
        }
        v.push(Damage::Delete);
        v
    };

    for damage in damages(rng, "config") {
        out.push(Case {
            kind: "config",
            key: "config".into(),
            damage,
            expect: Expect::Config,
        });
    }

    for idx in &fx.indexes {
        // A damaged index object is unusable as a whole: its packs' blobs are lost to
        // readers unless another index names them.
        let others: HashSet<PackId> = fx
            .indexes
            .iter()
            .filter(|i| i.key != idx.key)
            .flat_map(|i| i.packs.iter().copied())
            .collect();
        let lost: HashSet<BlobId> = fx
            .packs
            .iter()
            .filter(|p| {
                idx.packs
                    .iter()
                    .any(|id| p.key == drydock::repo::pack::key(id))
                    && !idx.packs.iter().any(|id| others.contains(id))
            })
            .flat_map(|p| p.entries.iter().map(|e| e.id))
            .collect();
        let named = fx.reaching(&lost);
        for damage in damages(rng, &idx.key) {
            let expect = match damage {
                // Nothing says it existed: what check reports is the blobs no index has.
                Damage::Delete if named.is_empty() => Expect::Harmless,
                Damage::Delete => Expect::Detected {
                    object: "index".into(),
                    named: named.clone(),
                    broken: named.clone(),
                },
                _ => Expect::Detected {
                    object: idx.key.clone(),
                    named: named.clone(),
                    broken: named.clone(),
                },
            };
            out.push(Case {
                kind: "index",
                key: idx.key.clone(),
                damage,
                expect,
            });
        }
    }

    for p in &fx.packs {
        let all: HashSet<BlobId> = p.entries.iter().map(|e| e.id).collect();
        let whole = fx.reaching(&all);
        for damage in damages(rng, &p.key) {
            let (named, broken) = match damage {
                // Inside a blob: that blob fails to authenticate. In the header: the pack
                // disagrees with its index and is reported whole, but every blob still
                // authenticates, so restores read intact data.
                Damage::Flip { at, .. } => match blob_at(p, at) {
                    Some(e) => {
                        let hit = fx.reaching(&HashSet::from([e.id]));
                        (hit.clone(), hit)
                    }
                    None => (whole.clone(), BTreeSet::new()),
                },
                // Too short for the index: reported whole; blobs wholly before the cut
                // still read back intact.
                Damage::Truncate { to } => {
                    let cut: HashSet<BlobId> = p
                        .entries
                        .iter()
                        .filter(|e| e.offset as u64 + e.length as u64 > to)
                        .map(|e| e.id)
                        .collect();
                    (whole.clone(), fx.reaching(&cut))
                }
                Damage::Delete => (whole.clone(), whole.clone()),
            };
            out.push(Case {
                kind: "pack",
                key: p.key.clone(),
                damage,
                expect: Expect::Detected {
                    object: p.key.clone(),
                    named,
                    broken,
                },
            });
        }
        // And a flip aimed at the age header of one blob a snapshot needs: a letter of the
        // X25519 stanza changes case, so the header still parses but no longer opens.
        let pack_bytes = fs::read(fx.root.join(&p.key)).unwrap();
        let used: Vec<&PackEntry> = p
            .entries
            .iter()
            .filter(|e| !fx.reaching(&HashSet::from([e.id])).is_empty())
            .collect();
        if !used.is_empty() {
            let e = used[rng.below(used.len() as u64) as usize];
            let blob = &pack_bytes[e.offset as usize..(e.offset + e.length) as usize];
            let stanza = blob
                .windows(10)
                .position(|w| w == b"-> X25519 ")
                .expect("an X25519 stanza")
                + 10;
            let letter = blob[stanza..]
                .iter()
                .position(u8::is_ascii_alphabetic)
                .unwrap()
                + stanza;
            let hit = fx.reaching(&HashSet::from([e.id]));
            out.push(Case {
                kind: "pack (age header)",
                key: p.key.clone(),
                damage: Damage::Flip {
                    at: e.offset as u64 + letter as u64,
                    mask: 0x20,
                },
                expect: Expect::Detected {
                    object: p.key.clone(),
                    named: hit.clone(),
                    broken: hit,
                },
            });
        }
    }

    for s in &fx.snaps {
        let key = format!("snapshots/{}", s.full);
        for damage in damages(rng, &key) {
            let only = BTreeSet::from([s.short.clone()]);
            out.push(Case {
                kind: "snapshot",
                key: key.clone(),
                damage,
                expect: match damage {
                    Damage::Delete => Expect::SnapshotGone {
                        short: s.short.clone(),
                    },
                    _ => Expect::Detected {
                        object: key.clone(),
                        named: only.clone(),
                        broken: only,
                    },
                },
            });
        }
    }

    for key in &fx.deletions {
        for damage in damages(rng, key) {
            out.push(Case {
                kind: "deletions",
                key: key.clone(),
                damage,
                expect: Expect::Record,
            });
        }
    }
    out
}

// ------------------------------------------------------------------ running a case

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn is_temp(p: &Path) -> bool {
    is_restore_temp(p)
        || p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".tmp-")
}

struct Restored {
    code: i32,
    stderr: String,
    /// Files or links in the target that the source never had, or with other content.
    wrong: Vec<String>,
    /// Every expected file and link is there with the right content.
    complete: bool,
    /// Files and links found in the target.
    written: usize,
}

fn restore(repo: &Repo, s: &Snap, work: &Path) -> Restored {
    let out = work.join(format!("restore-{}", s.label));
    let (cfg, reg) = (out.join("config"), out.join("registry"));
    let mut args = vec!["restore", &s.full, "--config-dir", cfg.to_str().unwrap()];
    if s.has_registry {
        args.extend(["--registry-fs", reg.to_str().unwrap()]);
    }
    let r = repo.id(&args);
    let mut wrong = Vec::new();
    let mut found = BTreeSet::new();
    let mut written = 0;
    for p in walk(&out) {
        let meta = fs::symlink_metadata(&p).unwrap();
        let got = if meta.file_type().is_symlink() {
            Entry::Link(fs::read_link(&p).unwrap())
        } else if meta.is_file() {
            if is_temp(&p) {
                continue;
            }
            Entry::File(fs::read(&p).unwrap())
        } else {
            continue;
        };
        written += 1;
        let rel = p.strip_prefix(&out).unwrap().to_path_buf();
        match s.expected.get(&rel) {
            Some(want) if *want == got => {
                found.insert(rel);
            }
            Some(_) => wrong.push(format!("{} has the wrong content", rel.display())),
            None => wrong.push(format!("{} is not in the source", rel.display())),
        }
    }
    fs::remove_dir_all(&out).ok();
    Restored {
        code: r.code,
        stderr: r.stderr,
        wrong,
        complete: found.len() == s.expected.len(),
        written,
    }
}

/// The outcome of one case, for the summary.
#[derive(Default)]
struct Outcome {
    detected: bool,
    /// Not detectable by design, and shown to be harmless.
    benign: bool,
    /// Documented exit code other than 4 (a damaged config `format`/`version`).
    other_code: Option<i32>,
    restores_refused: usize,
    restores_identical: usize,
}

fn error_line(stderr: &str) -> Result<&str, String> {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("drydock: error:"))
        .collect();
    match lines.as_slice() {
        [one] => Ok(one),
        _ => Err(format!("want one error line, stderr: {stderr}")),
    }
}

/// Every snapshot restores byte for byte.
fn all_restore(fx: &Fixture, repo: &Repo, work: &Path, o: &mut Outcome) -> Result<(), String> {
    for s in &fx.snaps {
        let r = restore(repo, s, work);
        if r.code != 0 || !r.complete || !r.wrong.is_empty() {
            return Err(format!(
                "restore of {} ({}): exit {}, complete {}, wrong {:?}\n{}",
                s.label, s.short, r.code, r.complete, r.wrong, r.stderr
            ));
        }
        o.restores_identical += 1;
    }
    Ok(())
}

fn run_case(fx: &Fixture, case: &Case, work: &Path) -> Result<Outcome, String> {
    let root = work.join("repo");
    copy_dir(&fx.root, &root);
    case.damage.apply(&root.join(&case.key));
    let repo = fx.repo(&root);
    let mut o = Outcome::default();
    let check = repo.id(&["--json", "check", "--read-data"]);
    let ctx = |what: String| {
        format!(
            "{what}\ncheck stdout: {}\nstderr: {}",
            check.stdout, check.stderr
        )
    };

    match &case.expect {
        Expect::Harmless => {
            if check.code != 0 {
                return Err(ctx(format!("check exit {}, want 0", check.code)));
            }
            o.benign = true;
            all_restore(fx, &repo, work, &mut o)?;
        }
        Expect::Detected {
            object,
            named,
            broken,
        } => {
            if check.code != 4 {
                return Err(ctx(format!("check exit {}, want 4", check.code)));
            }
            let report = &check.json()["report"];
            let affected: BTreeSet<String> = report["affected_snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            if &affected != named {
                return Err(ctx(format!("affected {affected:?}, want {named:?}")));
            }
            let objects: Vec<&str> = report["problems"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["object"].as_str().unwrap())
                .collect();
            if !objects.contains(&object.as_str()) {
                return Err(ctx(format!("no problem names {object}")));
            }
            let line = error_line(&check.stderr).map_err(&ctx)?;
            let listed = if named.is_empty() {
                "none".to_string()
            } else {
                named.iter().cloned().collect::<Vec<_>>().join(", ")
            };
            if !line.ends_with(&format!("affected snapshots: {listed}")) {
                return Err(ctx(format!("error line {line:?} should list {listed}")));
            }
            o.detected = true;
            for s in &fx.snaps {
                let r = restore(&repo, s, work);
                let what = format!("restore of {} ({})", s.label, s.short);
                if !r.wrong.is_empty() {
                    return Err(format!(
                        "{what} wrote wrong data: {:?}\n{}",
                        r.wrong, r.stderr
                    ));
                }
                match r.code {
                    // Restore reads only the blobs it needs, authenticated one by one: it
                    // fails exactly when one of them is damaged.
                    4 if !broken.contains(&s.short) => {
                        return Err(format!(
                            "{what} failed, but the data it needs is intact\n{}",
                            r.stderr
                        ))
                    }
                    4 => {
                        error_line(&r.stderr).map_err(|e| format!("{what}: {e}"))?;
                        o.restores_refused += 1;
                    }
                    0 if broken.contains(&s.short) => {
                        return Err(format!("{what} succeeded from damaged data"))
                    }
                    0 if !r.complete => return Err(format!("{what} exit 0 but incomplete")),
                    0 => o.restores_identical += 1,
                    c => return Err(format!("{what}: exit {c}, want 4 or 0\n{}", r.stderr)),
                }
            }
        }
        Expect::Config => match check.code {
            0 => {
                o.benign = true;
                all_restore(fx, &repo, work, &mut o)?;
            }
            2 | 4 => {
                let line = error_line(&check.stderr).map_err(&ctx)?;
                let clear = match (check.code, case.damage) {
                    (4, Damage::Delete) => line.contains("lost its config object"),
                    (4, _) => line.contains("config") || line.contains("sealed"),
                    _ => {
                        line.contains("not a drydock repository") || line.contains("format version")
                    }
                };
                if !clear {
                    return Err(ctx(format!("unclear message for a damaged config: {line}")));
                }
                if check.code == 4 {
                    o.detected = true;
                } else {
                    o.other_code = Some(2);
                }
                for s in &fx.snaps {
                    let r = restore(&repo, s, work);
                    if r.code != check.code || r.written > 0 {
                        return Err(format!(
                            "restore of {}: exit {} (check gave {}), wrong {:?}\n{}",
                            s.label, r.code, check.code, r.wrong, r.stderr
                        ));
                    }
                    o.restores_refused += 1;
                }
            }
            c => return Err(ctx(format!("check exit {c} for a damaged config"))),
        },
        Expect::Record => {
            match check.code {
                0 => o.benign = true,
                4 => {
                    let report = &check.json()["report"];
                    let named_it = report["problems"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["object"] == case.key.as_str());
                    if !named_it || !report["affected_snapshots"].as_array().unwrap().is_empty() {
                        return Err(ctx("want one problem naming the record, no snapshot".into()));
                    }
                    error_line(&check.stderr).map_err(&ctx)?;
                    o.detected = true;
                }
                c => return Err(ctx(format!("check exit {c}, want 0 or 4"))),
            }
            // No record stops a backup: one it cannot parse is skipped with a warning (a
            // backup only stores some blobs again for a mark it cannot read), and prune acts
            // only on records whose tag holds (FORMAT.md §11).
            let b = repo.bk(&["backup", "--config", fx.small_src.to_str().unwrap()]);
            match (check.code, b.code) {
                (0 | 4, 0) => {}
                _ => {
                    return Err(format!(
                        "check exit {} but backup exit {}: {}",
                        check.code, b.code, b.stderr
                    ))
                }
            }
            all_restore(fx, &repo, work, &mut o)?;
        }
        Expect::SnapshotGone { short } => {
            if check.code != 0 {
                return Err(ctx(format!("check exit {}, want 0", check.code)));
            }
            o.benign = true;
            let r = repo.id(&[
                "restore",
                short,
                "--config-dir",
                work.join("gone").to_str().unwrap(),
            ]);
            if r.code != 2 || !error_line(&r.stderr).is_ok_and(|l| l.contains("no snapshot")) {
                return Err(format!(
                    "restore of the deleted snapshot: exit {}\n{}",
                    r.code, r.stderr
                ));
            }
            for s in fx.snaps.iter().filter(|s| &s.short != short) {
                let r = restore(&repo, s, work);
                if r.code != 0 || !r.complete || !r.wrong.is_empty() {
                    return Err(format!(
                        "restore of {}: exit {}\n{}",
                        s.label, r.code, r.stderr
                    ));
                }
                o.restores_identical += 1;
            }
        }
    }
    Ok(o)
}

fn describe(c: &Case) -> String {
    let d = match c.damage {
        Damage::Flip { at, mask } => format!("flip {mask:#04x} at {at}"),
        Damage::Truncate { to } => format!("truncate to {to}"),
        Damage::Delete => "delete".into(),
    };
    format!("{} {} ({d})", c.kind, c.key)
}

#[test]
fn every_damaged_object_is_found_and_never_restored_silently() {
    let started = Instant::now();
    let mut rng = Rng(seed());
    let fx = build();
    let built = started.elapsed();
    let cases = cases(&fx, &mut rng);
    println!(
        "repository: {} snapshots, {} packs, {} index objects, {} deletion record(s); {} cases",
        fx.snaps.len(),
        fx.packs.len(),
        fx.indexes.len(),
        fx.deletions.len(),
        cases.len()
    );
    assert!(fx.packs.len() >= 4 && fx.indexes.len() >= 3 && fx.deletions.len() == 1);

    let work = tempfile::tempdir().unwrap();
    let queue = Mutex::new(cases.iter().enumerate().collect::<Vec<_>>());
    let results: Mutex<Vec<(usize, Result<Outcome, String>)>> = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let Some((i, case)) = queue.lock().unwrap().pop() else {
                    return;
                };
                let dir = work.path().join(format!("case-{i}"));
                let r = run_case(&fx, case, &dir);
                fs::remove_dir_all(&dir).ok();
                results.lock().unwrap().push((i, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);

    // Per kind and damage: cases, detected, harmless by design, other documented codes.
    let mut table: BTreeMap<(&str, &str), [usize; 6]> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, r) in &results {
        let c = &cases[*i];
        let row = table.entry((c.kind, c.damage.name())).or_default();
        row[0] += 1;
        match r {
            Ok(o) => {
                row[1] += o.detected as usize;
                row[2] += o.benign as usize;
                row[3] += o.other_code.is_some() as usize;
                row[4] += o.restores_refused;
                row[5] += o.restores_identical;
            }
            Err(e) => failures.push(format!("{}: {e}", describe(c))),
        }
    }
    println!(
        "{:<18} {:<9} {:>5} {:>8} {:>8} {:>7} {:>9} {:>10}",
        "object", "damage", "cases", "detected", "harmless", "exit 2", "restore 4", "restore ok"
    );
    for ((kind, damage), r) in &table {
        println!(
            "{kind:<18} {damage:<9} {:>5} {:>8} {:>8} {:>7} {:>9} {:>10}",
            r[0], r[1], r[2], r[3], r[4], r[5]
        );
    }
    let total = results.len();
    let ok = results.iter().filter(|(_, r)| r.is_ok()).count();
    println!(
        "{ok}/{total} cases as specified; fixture {:.1}s, total {:.1}s",
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// A store holding only a `config` object, in memory: ten thousand opens in seconds.
struct ConfigOnly(bytes::Bytes);

#[async_trait::async_trait]
impl drydock::store::Store for ConfigOnly {
    fn describe(&self) -> String {
        "memory".into()
    }
    async fn put(
        &self,
        _: &str,
        _: bytes::Bytes,
        _: drydock::store::PutMode,
    ) -> drydock::error::Result<drydock::store::PutOutcome> {
        unreachable!("opening writes nothing")
    }
    async fn get(&self, key: &str) -> drydock::error::Result<bytes::Bytes> {
        assert_eq!(key, "config");
        Ok(self.0.clone())
    }
    async fn get_range(&self, _: &str, _: u64, _: u64) -> drydock::error::Result<bytes::Bytes> {
        unreachable!("opening reads only config")
    }
    async fn list(&self, _: &str) -> drydock::error::Result<Vec<drydock::store::ObjectInfo>> {
        Ok(Vec::new())
    }
    async fn delete(&self, _: &str) -> drydock::error::Result<()> {
        unreachable!("opening deletes nothing")
    }
    async fn open_read(&self, _: &str) -> drydock::error::Result<drydock::store::ByteReader> {
        unreachable!("opening reads only config")
    }
    async fn put_stream(
        &self,
        _: &str,
        _: futures::stream::BoxStream<'_, drydock::error::Result<bytes::Bytes>>,
    ) -> drydock::error::Result<()> {
        unreachable!("opening writes nothing")
    }
}

/// Every single-bit flip of `config` (every bit of every byte) and every truncation, opened
/// with the identity in-process: each is refused with a documented code and a message that
/// says the config is damaged or not authentic, or it changed only its layout (spaces, hex
/// case) or a field the key given does not read.
#[test]
fn every_bit_of_config_is_covered() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let root = repo.local_root.clone().unwrap();
    let pristine = fs::read(root.join("config")).unwrap();
    let identity = fs::read_to_string(&repo.identity).unwrap();
    let backup_key = fs::read_to_string(&repo.backup_key).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let open_with = |bytes: &[u8], key: &str| {
        let store = Arc::new(ConfigOnly(bytes::Bytes::copy_from_slice(bytes)));
        rt.block_on(Repository::open(store, KeyFile::parse(key).unwrap()))
    };
    let good = open_with(&pristine, &identity).unwrap();
    let good_config = serde_json::to_value(&good.config).unwrap();
    let chunk_key = good.keys.chunk_key("test").unwrap().to_hex();

    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad = Vec::new();
    // The backup-only key cannot open the sealed chunk key and does not use it (it carries
    // its own); the identity sweep above covers that field.
    let mut judge = |what: String, bytes: &[u8], key: &str, tag: &str, unused: &[&str]| {
        let with_identity = key.contains("AGE-SECRET-KEY-");
        let class = match open_with(bytes, key) {
            Ok(r) => {
                let config = serde_json::to_value(&r.config).unwrap();
                // Hex is read in either case: an upper-case digit is the same key.
                let same = |k: &str, v: &serde_json::Value| match (v, config.get(k)) {
                    (serde_json::Value::String(a), Some(serde_json::Value::String(b))) => {
                        a.eq_ignore_ascii_case(b)
                    }
                    (a, b) => Some(a) == b,
                };
                let changed: Vec<&String> = good_config
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(k, v)| !same(k, v))
                    .map(|(k, _)| k)
                    .collect();
                // Every field is authenticated (format v2): a change that still opens may
                // only touch what this key does not read.
                if r.keys.chunk_key("test").unwrap().to_hex() != chunk_key
                    || changed.iter().any(|k| !unused.contains(&k.as_str()))
                {
                    bad.push(format!("{what}: opened, but changed {changed:?}"));
                }
                "opened (an unread field or layout changed)".to_string()
            }
            Err(e) => {
                let (code, msg) = (e.exit_code(), e.to_string());
                let clear = match code {
                    4 => msg.contains("config"),
                    // A backup-only key cannot tell a damaged key_check from a damaged key.
                    5 => !with_identity && msg.contains("config"),
                    2 => msg.contains("not a drydock repository") || msg.contains("format version"),
                    _ => false,
                };
                if !clear {
                    bad.push(format!("{what}: exit {code}: {msg}"));
                }
                format!("exit {code}")
            }
        };
        *outcomes.entry(format!("{tag}: {class}")).or_default() += 1;
    };
    for at in 0..pristine.len() {
        for bit in 0..8 {
            let mut b = pristine.clone();
            b[at] ^= 1 << bit;
            judge(
                format!("flip bit {bit} of byte {at}"),
                &b,
                &identity,
                "identity, flip",
                &[],
            );
        }
    }
    println!("flips {:.1}s", started.elapsed().as_secs_f64());
    for len in 0..pristine.len() {
        judge(
            format!("truncate to {len}"),
            &pristine[..len],
            &identity,
            "identity, truncate",
            &[],
        );
    }
    for at in 0..pristine.len() {
        for bit in 0..8 {
            let mut b = pristine.clone();
            b[at] ^= 1 << bit;
            judge(
                format!("bk flip bit {bit} of byte {at}"),
                &b,
                &backup_key,
                "backup key, flip",
                &[
                    "sealed_chunk_key",
                    "sealed_maintenance_secret",
                    "identity_auth",
                ],
            );
        }
    }
    println!(
        "config: {} bytes; {outcomes:#?}; {:.1}s",
        pristine.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        bad.is_empty(),
        "{} unclear outcome(s):\n{}",
        bad.len(),
        bad.join("\n")
    );
}
