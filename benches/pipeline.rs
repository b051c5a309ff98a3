//! Throughput of drydock's chunk pipeline, stage by stage and combined.
//!
//! Every benchmark pushes 64 MiB through one or more stages and reports MB/s
//! (`Throughput::Bytes`). Two inputs stand for what a Harbor backup sees:
//! - `noise`: incompressible bytes, like registry layers (already gzip);
//! - `csv`: repetitive CSV-like rows, like a database dump (audit_log, task, …).
//!
//! Stages (see src/repo/writer.rs for the real pipeline):
//! - `chunk`: FastCDC 2020 with the default parameters (256 KiB / 1 MiB / 8 MiB);
//! - `blob_id`: keyed BLAKE3 of every chunk;
//! - `zstd_decision`: the compression step alone (a copy of the private `blob::compress`:
//!   a level-1 trial on the first 64 KiB, then the repository level, 3);
//! - `encrypt`: age X25519 encryption of every chunk;
//! - `encode`: `blob::encode` per chunk = id + compression decision + encryption;
//! - `pipeline_1t`: chunk + encode, one thread;
//! - `pipeline_2t`: chunk + encode on a 2-thread rayon pool with `par_bridge`, as
//!   `BlobWriter::save_stream` does;
//! - `encode_4k`: `blob::encode` of 1024 small (4 KiB) blobs, like config files and trees;
//!   reported per blob, since each blob pays a fixed cost (age header, X25519 exchange);
//! - `sha256`: reference only, the digest check a registry blob backup does on every byte.
//!
//! Run: `cargo bench --bench pipeline` (a few minutes). Results: docs/BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use rayon::prelude::*;
use sha2::Digest;

use drydock::chunker::{self, ChunkerParams};
use drydock::crypto::{self, ChunkKey, Identity, Recipient};
use drydock::repo::blob::{self, BlobType};
use drydock::repo::config::DEFAULT_ZSTD_LEVEL;

const SIZE: usize = 64 << 20;

/// Incompressible bytes (xorshift64*), standing in for gzip registry layers.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Repetitive CSV-like rows, standing in for a `COPY … TO STDOUT` of Harbor's audit_log.
fn csv(n: usize) -> Vec<u8> {
    const OPS: [&str; 5] = ["pull", "push", "delete", "create", "pull"];
    const REPOS: [&str; 8] = [
        "library/nginx",
        "library/redis",
        "proj/team/app",
        "proj/team/api",
        "infra/postgres",
        "infra/harbor-core",
        "ml/trainer",
        "web/frontend",
    ];
    const USERS: [&str; 4] = ["admin", "robot$ci", "alice", "bob"];
    let mut x: u64 = 42;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(n + 256);
    let mut id = 1_000_000u64;
    let mut t = 1_700_000_000u64;
    while out.len() < n {
        let r = next();
        id += 1;
        t += r % 7;
        let repo = REPOS[(r >> 8) as usize % REPOS.len()];
        let tag = format!("v{}.{}.{}", (r >> 16) % 3, (r >> 20) % 20, (r >> 24) % 10);
        let line = format!(
            "{id},{},{repo},{repo}:{tag},{},{},sha256:{:016x}{:016x},{}\n",
            (r >> 32) % 40 + 1,
            OPS[(r >> 36) as usize % OPS.len()],
            USERS[(r >> 40) as usize % USERS.len()],
            next(),
            next() & 0xffff,
            t,
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(n);
    out
}

/// Same decision as the private `drydock::repo::blob::compress`.
fn compress_like_drydock(data: &[u8], level: i32) -> Vec<u8> {
    const SAMPLE: usize = 64 * 1024;
    let saves = |c: usize, o: usize| c * 100 <= o * 97;
    let mut out = Vec::with_capacity(data.len() + 1);
    if data.len() > SAMPLE {
        let trial = zstd::bulk::compress(&data[..SAMPLE], 1).unwrap_or_default();
        if trial.is_empty() || !saves(trial.len(), SAMPLE) {
            out.push(0);
            out.extend_from_slice(data);
            return out;
        }
    }
    match zstd::bulk::compress(data, level) {
        Ok(z) if saves(z.len(), data.len()) => {
            out.push(1);
            out.extend_from_slice(&z);
        }
        _ => {
            out.push(0);
            out.extend_from_slice(data);
        }
    }
    out
}

fn split(data: &[u8], seed: u64) -> Vec<Vec<u8>> {
    chunker::chunks(data, &ChunkerParams::default(), seed)
        .map(|c| c.expect("chunking a slice cannot fail").data)
        .collect()
}

struct Inputs {
    key: ChunkKey,
    recipient: Recipient,
    seed: u64,
    noise: Vec<u8>,
    csv: Vec<u8>,
    noise_chunks: Vec<Vec<u8>>,
    csv_chunks: Vec<Vec<u8>>,
}

fn inputs() -> Inputs {
    let key = ChunkKey::generate();
    let seed = key.chunker_seed();
    let noise = noise(SIZE);
    let csv = csv(SIZE);
    let noise_chunks = split(&noise, seed);
    let csv_chunks = split(&csv, seed);
    // Print what the inputs look like, so the numbers can be read in context.
    let ratio = {
        let stored: usize = csv_chunks
            .iter()
            .map(|c| compress_like_drydock(c, DEFAULT_ZSTD_LEVEL).len())
            .sum();
        SIZE as f64 / stored as f64
    };
    eprintln!(
        "inputs: 64 MiB noise in {} chunks, 64 MiB csv in {} chunks (zstd-{} ratio {ratio:.1}x)",
        noise_chunks.len(),
        csv_chunks.len(),
        DEFAULT_ZSTD_LEVEL
    );
    Inputs {
        key,
        recipient: Identity::generate().to_public(),
        seed,
        noise,
        csv,
        noise_chunks,
        csv_chunks,
    }
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    g
}

fn encode_all(inp: &Inputs, chunks: &[Vec<u8>]) -> usize {
    chunks
        .iter()
        .map(|c| {
            blob::encode(
                &inp.key,
                &inp.recipient,
                BlobType::Data,
                c,
                DEFAULT_ZSTD_LEVEL,
            )
            .bytes
            .len()
        })
        .sum()
}

fn pipeline_1t(inp: &Inputs, data: &[u8]) -> usize {
    chunker::chunks(data, &ChunkerParams::default(), inp.seed)
        .map(|c| {
            let c = c.expect("chunk");
            blob::encode(
                &inp.key,
                &inp.recipient,
                BlobType::Data,
                &c.data,
                DEFAULT_ZSTD_LEVEL,
            )
            .bytes
            .len()
        })
        .sum()
}

fn pipeline_pool(pool: &rayon::ThreadPool, inp: &Inputs, data: &[u8]) -> usize {
    pool.install(|| {
        chunker::chunks(data, &ChunkerParams::default(), inp.seed)
            .par_bridge()
            .map(|c| {
                let c = c.expect("chunk");
                blob::encode(
                    &inp.key,
                    &inp.recipient,
                    BlobType::Data,
                    &c.data,
                    DEFAULT_ZSTD_LEVEL,
                )
                .bytes
                .len()
            })
            .sum()
    })
}

/// A named input: the whole stream and its chunks.
type NamedInput<'a> = (&'a str, &'a [u8], &'a [Vec<u8>]);

fn benches(c: &mut Criterion) {
    let inp = inputs();
    let inputs_by_name: [NamedInput; 2] = [
        ("noise", &inp.noise, &inp.noise_chunks),
        ("csv", &inp.csv, &inp.csv_chunks),
    ];

    {
        let mut g = group(c, "chunk");
        for (name, data, _) in inputs_by_name {
            g.bench_function(name, |b| {
                b.iter(|| {
                    chunker::chunks(black_box(data), &ChunkerParams::default(), inp.seed)
                        .map(|c| c.expect("chunk").data.len())
                        .sum::<usize>()
                })
            });
        }
        g.finish();
    }
    {
        let mut g = group(c, "blob_id");
        g.bench_function("noise", |b| {
            b.iter(|| {
                for ch in &inp.noise_chunks {
                    black_box(inp.key.blob_id(BlobType::Data as u8, black_box(ch)));
                }
            })
        });
        g.finish();
    }
    {
        let mut g = group(c, "zstd_decision");
        for (name, _, chunks) in inputs_by_name {
            g.bench_function(name, |b| {
                b.iter(|| {
                    chunks
                        .iter()
                        .map(|ch| compress_like_drydock(black_box(ch), DEFAULT_ZSTD_LEVEL).len())
                        .sum::<usize>()
                })
            });
        }
        g.finish();
    }
    {
        let mut g = group(c, "encrypt");
        g.bench_function("noise", |b| {
            b.iter(|| {
                inp.noise_chunks
                    .iter()
                    .map(|ch| crypto::encrypt(&inp.recipient, black_box(ch)).len())
                    .sum::<usize>()
            })
        });
        g.finish();
    }
    {
        let mut g = group(c, "encode");
        for (name, _, chunks) in inputs_by_name {
            g.bench_function(name, |b| b.iter(|| encode_all(&inp, black_box(chunks))));
        }
        g.finish();
    }
    {
        let mut g = group(c, "pipeline_1t");
        for (name, data, _) in inputs_by_name {
            g.bench_function(name, |b| b.iter(|| pipeline_1t(&inp, black_box(data))));
        }
        g.finish();
    }
    {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("rayon pool");
        let mut g = group(c, "pipeline_2t");
        for (name, data, _) in inputs_by_name {
            g.bench_function(name, |b| {
                b.iter(|| pipeline_pool(&pool, &inp, black_box(data)))
            });
        }
        g.finish();
    }
    {
        let small: Vec<Vec<u8>> = inp
            .csv
            .chunks(4096)
            .take(1024)
            .map(|c| c.to_vec())
            .collect();
        let mut g = group(c, "encode_4k");
        g.throughput(Throughput::Elements(small.len() as u64));
        g.bench_function("csv", |b| b.iter(|| encode_all(&inp, black_box(&small))));
        g.finish();
        let stored: usize = encode_all(&inp, &small);
        eprintln!(
            "encode_4k: 1024 blobs of 4 KiB stored as {} bytes ({} per blob)",
            stored,
            stored / small.len()
        );
    }
    {
        let mut g = group(c, "sha256");
        g.bench_function("noise", |b| {
            b.iter(|| sha2::Sha256::digest(black_box(&inp.noise[..])))
        });
        g.finish();
    }
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
