//! The PostgreSQL client program drydock runs: pg_dump, for the schema (restore applies it
//! over its own connections, never through psql). Chosen to match the server: Debian keeps
//! every major under /usr/lib/postgresql/N/bin.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// A client program and its major version.
#[derive(Clone, Debug)]
pub struct Tool {
    pub path: PathBuf,
    pub major: i32,
    pub version: String,
}

fn version_of(path: &Path) -> Option<(i32, String)> {
    let out = Command::new(path).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    let version = text.split_whitespace().nth(2)?.to_string();
    let major = version.split(['.', 'b', 'r']).next()?.parse().ok()?;
    Some((major, version))
}

/// The newest-fitting `name` for a server of `server_major`: the same major first, then a
/// newer installed one, then `name` on PATH. An older client is refused: it cannot dump a
/// newer server.
pub fn find(name: &str, server_major: i32) -> Result<Tool> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    candidates.push(PathBuf::from(format!(
        "/usr/lib/postgresql/{server_major}/bin/{name}"
    )));
    if let Ok(dirs) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut majors: Vec<i32> = dirs
            .flatten()
            .filter_map(|d| d.file_name().to_str().and_then(|s| s.parse().ok()))
            .filter(|m| *m > server_major)
            .collect();
        majors.sort();
        candidates.extend(
            majors
                .into_iter()
                .map(|m| PathBuf::from(format!("/usr/lib/postgresql/{m}/bin/{name}"))),
        );
    }
    candidates.push(PathBuf::from(name));
    let mut older = None;
    for c in candidates {
        if let Some((major, version)) = version_of(&c) {
            if major >= server_major {
                return Ok(Tool {
                    path: c,
                    major,
                    version,
                });
            }
            older.get_or_insert(version);
        }
    }
    Err(Error::Usage(match older {
        Some(v) => format!(
            "{name} {v} is older than the PostgreSQL {server_major} server; install postgresql-client-{server_major} (or newer)"
        ),
        None => format!("{name} not found; install the PostgreSQL client tools (postgresql-client-{server_major})"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    // scripts/test installs the PostgreSQL 15 client, so these run everywhere tests run.

    #[test]
    fn missing_and_too_old_clients_say_what_to_install() {
        let e = find("pg_dump_that_does_not_exist", 15)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not found") && e.contains("postgresql-client-15"),
            "{e}"
        );
        let e = find("pg_dump", 99).unwrap_err().to_string();
        assert!(
            e.contains("older than the PostgreSQL 99 server") && e.contains("postgresql-client-99"),
            "{e}"
        );
    }

    #[test]
    fn a_matching_client_is_found_with_its_version() {
        let tool = find("pg_dump", 15).unwrap();
        assert!(tool.major >= 15, "{tool:?}");
        assert!(
            tool.version.starts_with(&tool.major.to_string()),
            "{tool:?}"
        );
    }
}
