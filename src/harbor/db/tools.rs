//! The PostgreSQL client program drydock runs: pg_dump, for the schema (restore applies it
//! over its own connections, never through psql). Chosen to match the server, from PATH
//! and from where PGDG packages keep every major (/usr/lib/postgresql/N/bin on Debian,
//! /usr/pgsql-N/bin on RHEL).

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

/// Where client programs may be, in order: every absolute directory on `PATH` (the
/// operator's choice comes first), then where PGDG packages put each major.
fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .filter(|d| d.is_absolute())
                .collect()
        })
        .unwrap_or_default();
    for (parent, prefix, suffix) in [
        ("/usr/lib/postgresql", "", "bin"), // Debian and Ubuntu
        ("/usr", "pgsql-", "bin"),          // RHEL and Fedora
    ] {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        let mut found: Vec<(i32, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let major = name.strip_prefix(prefix)?.parse().ok()?;
                Some((major, e.path().join(suffix)))
            })
            .collect();
        found.sort();
        dirs.extend(found.into_iter().map(|(_, d)| d));
    }
    dirs
}

/// Every installed `name`, by absolute path, with its version. Wrappers that pick a major
/// by themselves (Debian's pg_wrapper behind /usr/bin/pg_dump) are skipped: children run
/// with a cleared environment, so such a wrapper could run another major than it reports.
fn installed(name: &str) -> Vec<Tool> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for dir in search_dirs() {
        let Ok(path) = std::fs::canonicalize(dir.join(name)) else {
            continue;
        };
        if path.file_name() != Some(std::ffi::OsStr::new(name)) || !seen.insert(path.clone()) {
            continue;
        }
        if let Some((major, version)) = version_of(&path) {
            out.push(Tool {
                path,
                major,
                version,
            });
        }
    }
    out
}

/// The `name` for a server of `server_major`: the first one of that major, else the oldest
/// newer one. An older client is refused: it cannot dump a newer server. The path is
/// absolute, so a child spawned with a cleared environment runs exactly this program.
pub fn find(name: &str, server_major: i32) -> Result<Tool> {
    choose(name, server_major, installed(name))
}

fn choose(name: &str, server_major: i32, tools: Vec<Tool>) -> Result<Tool> {
    let older = tools
        .iter()
        .filter(|t| t.major < server_major)
        .max_by_key(|t| t.major)
        .map(|t| t.version.clone());
    let fitting = tools
        .into_iter()
        .filter(|t| t.major >= server_major)
        .enumerate()
        .min_by_key(|(i, t)| (t.major, *i));
    if let Some((_, tool)) = fitting {
        return Ok(tool);
    }
    Err(Error::Usage(match older {
        Some(v) => format!(
            "{name} {v} is older than the PostgreSQL {server_major} server; install postgresql-client-{server_major} (or put its bin directory on PATH)"
        ),
        None => format!("{name} not found; install the PostgreSQL client tools (postgresql-client-{server_major}) or put their bin directory on PATH"),
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

    fn tool(major: i32, path: &str) -> Tool {
        Tool {
            path: path.into(),
            major,
            version: format!("{major}.1"),
        }
    }

    #[test]
    fn the_same_major_wins_then_the_oldest_newer_one() {
        let all = || {
            vec![
                tool(18, "/a/18"),
                tool(15, "/b/15"),
                tool(16, "/c/16"),
                tool(15, "/d/15"),
            ]
        };
        assert_eq!(
            choose("pg_dump", 15, all()).unwrap().path,
            PathBuf::from("/b/15")
        );
        assert_eq!(
            choose("pg_dump", 14, all()).unwrap().path,
            PathBuf::from("/b/15")
        );
        assert_eq!(
            choose("pg_dump", 17, all()).unwrap().path,
            PathBuf::from("/a/18")
        );
        let e = choose("pg_dump", 19, all()).unwrap_err().to_string();
        assert!(
            e.contains("pg_dump 18.1 is older than the PostgreSQL 19"),
            "{e}"
        );
    }

    #[test]
    fn a_matching_client_is_found_with_its_version() {
        let tool = find("pg_dump", 15).unwrap();
        assert!(tool.major >= 15, "{tool:?}");
        assert!(tool.path.is_absolute(), "{tool:?}");
        assert!(
            tool.version.starts_with(&tool.major.to_string()),
            "{tool:?}"
        );
    }
}
