//! drydock: a Velero-compatible backup and restore agent for Harbor.
//!
//! The library is organised by concept:
//! - [`store`]: where objects live (a local directory or S3).
//! - [`repo`]: the repository format — packs, index, snapshots, trees, keys.
//! - [`chunker`] and [`crypto`]: content-defined chunking, keyed ids, age encryption.
//! - [`harbor`]: the parts of a Harbor snapshot (today: configuration files).
//! - [`oci`]: a client for registries' `/v2/` API, with Harbor's token auth.
//! - [`beneath`]: restore writes, confined beneath their target directory.
//! - [`cli`]: one module per command; the binary is a thin wrapper around it.
//! - [`term`]: escaping of untrusted strings for human output.

pub mod beneath;
pub mod chunker;
pub mod cli;
pub mod crypto;
pub mod error;
pub mod harbor;
pub mod ids;
pub mod metrics;
pub mod net;
pub mod oci;
pub mod progress;
pub mod repo;
pub mod secret;
pub mod store;
pub mod term;
pub mod velero;

pub use error::{Error, Result};
