//! One error type for the library, each variant mapped to a documented exit code.

use std::io;

/// Exit codes, documented in `--help` and docs/OPERATIONS.md.
pub mod exit {
    pub const SUCCESS: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const PARTIAL: i32 = 3;
    pub const INTEGRITY: i32 = 4;
    pub const KEY: i32 = 5;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command line or configuration (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Missing, wrong or insufficient key, or permission denied (exit 5).
    #[error("{0}")]
    Key(String),
    /// Missing or corrupt repository data (exit 4).
    #[error("{0}")]
    Integrity(String),
    /// Input from a snapshot, or a restore target, that drydock will not act on: a psql
    /// meta-command, a symlink on the way (exit 4, like damage, but the message itself says
    /// what to do, so no `check` hint follows).
    #[error("{0}")]
    Refused(String),
    /// A repository object whose authentication tag does not match: written by someone
    /// without the key it needs, so no decision may rest on it (exit 4).
    #[error("{0}")]
    Unauthentic(String),
    /// A local file operation failed (exit 1).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The object store failed after retries (exit 1).
    #[error("{0}")]
    Store(String),
    /// A requested object does not exist (exit 1 unless mapped by the caller).
    #[error("{0} does not exist")]
    NotFound(String),
    /// An object S3 Object Lock keeps: a version of it is under retention (or a legal hold),
    /// so the store refused to delete it. Nothing is damaged; a later prune deletes it once
    /// the retain-until date the message names has passed (exit 1).
    #[error("{0}")]
    Retained(String),
    /// An object in an archival storage class (GLACIER, DEEP_ARCHIVE) that is not thawed:
    /// S3 answered a GET with InvalidObjectState. Nothing is damaged; the commands that
    /// read data thaw it (exit 1 where one cannot).
    #[error("{0}")]
    Cold(String),
    /// Anything else (exit 1).
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::Key(_) => exit::KEY,
            Error::Integrity(_) | Error::Refused(_) | Error::Unauthentic(_) => exit::INTEGRITY,
            Error::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                exit::KEY
            }
            Error::Io { .. }
            | Error::Store(_)
            | Error::NotFound(_)
            | Error::Retained(_)
            | Error::Cold(_)
            | Error::Other(_) => exit::FAILURE,
        }
    }

    /// The operator's next step, appended to the one-line message where it helps.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            // By kind as well: wrappers that add the path (tempfile's) hide the OS error.
            Error::Io { source, .. }
                if source.raw_os_error() == Some(libc::ENOSPC)
                    || source.kind() == io::ErrorKind::StorageFull =>
            {
                Some("free space on the target and run the command again")
            }
            Error::Integrity(_) => {
                Some("run `drydock check --read-data` to see every affected snapshot")
            }
            Error::Unauthentic(_) => {
                Some("run `drydock check` to list every object that is not authentic")
            }
            Error::Cold(_) => Some(
                "`drydock restore`, `verify` and `check --read-data` thaw archived packs (--thaw-tier, --thaw-days); `--dry-run` shows what they would thaw",
            ),
            _ => None,
        }
    }

    /// A missing object seen while reading the repository is an integrity failure.
    pub fn into_integrity(self) -> Self {
        match self {
            Error::NotFound(what) => {
                Error::Integrity(format!("{what} is missing from the repository"))
            }
            other => other,
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Integrity(format!("malformed JSON: {e}"))
    }
}
