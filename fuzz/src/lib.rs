//! Shared by the fuzz targets and the corpus generator: the fixed test keys.
//!
//! These keys protect nothing: they exist so the `envelope` and `blob` targets can decrypt
//! and so `gen-corpus` can write a repository whose encrypted objects they open. Never use
//! them for a real repository.

use std::str::FromStr;

use drydock::crypto::{ChunkKey, Identity, MaintenanceSecret};
use drydock::ids::RepoId;
use drydock::repo::auth::{AuthKey, Authenticator};

/// The identity the seed repository of `fuzz/gen-corpus` is encrypted to (`drydock init
/// --recipient age14lcx…`).
pub const TEST_IDENTITY: &str =
    "AGE-SECRET-KEY-1FKULPYDN8HELDHSF4F38YTH37FTJC0C0SN476478R3YNF74W4Y0SUVVK0P";
pub const TEST_RECIPIENT: &str = "age14lcxalletqq0vafrguhx5cs368zgxglyjqtkfrp57tey9ncna45scun5as";
/// The chunk key of the `blob` target (any 32 bytes do).
pub const TEST_CHUNK_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

pub fn identity() -> Identity {
    Identity::from_str(TEST_IDENTITY).expect("the test identity parses")
}

pub fn chunk_key() -> ChunkKey {
    ChunkKey::from_hex(TEST_CHUNK_KEY).expect("the test chunk key parses")
}

/// The object key of [`chunk_key`] for repository id 0…0: the targets tag their input with
/// it, so that mutations reach the parsers behind the tag check instead of stopping there.
pub fn authenticator() -> Authenticator {
    Authenticator::new(AuthKey::objects(&chunk_key()), RepoId([0; 32]))
}

/// A deletion key for the same repository.
pub fn deletion_authenticator() -> Authenticator {
    Authenticator::new(
        AuthKey::deletions(&MaintenanceSecret::from_bytes([0x11; 32])),
        RepoId([0; 32]),
    )
}

/// Little-endian integers from the front of a fuzz input.
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    pub fn u8(&mut self) -> u8 {
        let (v, rest) = self.0.split_first().map_or((0, &[][..]), |(v, r)| (*v, r));
        self.0 = rest;
        v
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) | ((self.u32() as u64) << 32)
    }

    pub fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// Fail loudly on allocations no parser should ask for: without a sanitizer libFuzzer
/// cannot see them (`Vec::with_capacity(4 GiB)` costs no RSS until it is touched).
pub const ALLOCATION_LIMIT: usize = 256 << 20;

struct Limited;

unsafe impl std::alloc::GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        check(layout.size());
        std::alloc::System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        check(layout.size());
        std::alloc::System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        check(new);
        std::alloc::System.realloc(ptr, layout, new)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        std::alloc::System.dealloc(ptr, layout)
    }
}

fn check(size: usize) {
    if size > ALLOCATION_LIMIT {
        // Not a panic: panicking inside the allocator would allocate. libFuzzer reports
        // the abort as a crash and writes the reproducer.
        const MSG: &[u8] = b"drydock-fuzz: allocation over the 256 MiB limit\n";
        unsafe { libc_write(2, MSG.as_ptr(), MSG.len()) };
        std::process::abort();
    }
}

extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: i32, buf: *const u8, count: usize) -> isize;
}

#[global_allocator]
static ALLOC: Limited = Limited;
