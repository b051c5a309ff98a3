//! Content-defined chunking (FastCDC 2020) with a secret, per-repository gear seed.
//!
//! Sizes are fixed per repository in its config (docs/FORMAT.md explains the choice).

use std::io::Read;

use fastcdc::v2020::{Normalization, StreamCDC};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub algorithm: ChunkerAlgorithm,
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkerAlgorithm {
    #[serde(rename = "fastcdc-2020-nc1")]
    FastCdc2020,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020,
            min_size: 256 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min_size)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg_size)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max_size)
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size;
        if ok {
            Ok(())
        } else {
            Err(Error::Integrity(format!(
                "unsupported chunker parameters {self:?}"
            )))
        }
    }
}

/// A chunk of a stream and its position.
pub struct Chunk {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// Split a reader into content-defined chunks; memory is bounded by `max_size` plus one chunk.
pub fn chunks<R: Read>(
    reader: R,
    params: &ChunkerParams,
    seed: u64,
) -> impl Iterator<Item = Result<Chunk>> {
    StreamCDC::with_level_and_seed(
        reader,
        params.min_size,
        params.avg_size,
        params.max_size,
        Normalization::Level1,
        seed,
    )
    .map(|r| match r {
        Ok(c) => Ok(Chunk {
            offset: c.offset,
            data: c.data,
        }),
        Err(fastcdc::v2020::Error::IoError(e)) => Err(Error::io("read failed while chunking", e)),
        Err(e) => Err(Error::Other(format!("chunker failed: {e}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunks_cover_input_and_respect_bounds() {
        let data = pseudo_random(20 << 20, 1);
        let p = ChunkerParams::default();
        let cs: Vec<Chunk> = chunks(&data[..], &p, 42).map(|c| c.unwrap()).collect();
        let total: usize = cs.iter().map(|c| c.data.len()).sum();
        assert_eq!(total, data.len());
        for c in &cs[..cs.len() - 1] {
            assert!(c.data.len() >= p.min_size as usize && c.data.len() <= p.max_size as usize);
        }
        assert!(
            cs.len() > 5,
            "20 MiB should give many ~1 MiB chunks, got {}",
            cs.len()
        );
    }

    #[test]
    fn an_insertion_only_changes_nearby_chunks() {
        let data = pseudo_random(16 << 20, 2);
        let mut edited = data.clone();
        edited.splice(5_000_000..5_000_000, b"inserted bytes".iter().copied());
        let p = ChunkerParams::default();
        let set = |d: &[u8]| -> std::collections::HashSet<Vec<u8>> {
            chunks(d, &p, 7).map(|c| c.unwrap().data).collect()
        };
        let (a, b) = (set(&data), set(&edited));
        let shared = a.intersection(&b).count();
        assert!(shared + 3 >= a.len(), "shared {shared} of {}", a.len());
    }
}
