//! Harbor's `secretKey` among the configuration inputs.
//!
//! Harbor encrypts the credentials it keeps in its database (replication registries, LDAP
//! search password, OIDC client secret and tokens, scanner and preheat credentials) with a
//! 16-character key read from `KEY_PATH` (default `/etc/core/key`). A database restored
//! without that key works until Harbor tries to decrypt one of them — AES-CFB has no
//! integrity check, so a wrong key silently yields garbage. The key is found as:
//! - `secretkey` (docker-compose: `/data/secret/keys/secretkey`),
//! - `key` in a directory named `core` (`/etc/core/key` in the core container),
//! - `secretKey` (a mounted Kubernetes Secret, e.g. the Helm chart's `harbor-core`),
//!
//! and counts only if it holds exactly 16 bytes (one trailing newline ignored).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Size of Harbor's secretKey.
pub const KEY_LEN: usize = 16;

/// Directories walked below the `--config` paths, at most: configuration trees are small,
/// and a mistaken `--config /` must not turn the check into a filesystem scan.
const MAX_ENTRIES: usize = 100_000;

/// The warning for a snapshot with a database and no secretKey.
pub const MISSING_WARNING: &str = "no Harbor secretKey among the --config paths: the registry, LDAP, OIDC (and scanner/preheat) \
credentials Harbor stores encrypted in the database cannot be decrypted after a restore without it; include it with \
--config /etc/core/key (in the core container), --config /data/secret/keys/secretkey (docker-compose), or the mounted \
harbor-core Secret directory holding secretKey (Helm)";

/// What the search found.
#[derive(Debug, Default)]
pub struct Found {
    /// Files that are a secretKey: right name, 16 bytes.
    pub keys: Vec<PathBuf>,
    /// Files with a secretKey's name but another size, and that size.
    pub rejected: Vec<(PathBuf, u64)>,
}

impl Found {
    pub fn found(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The warning line, naming any file that looked like a key but was not one.
    pub fn warning(&self) -> String {
        if self.rejected.is_empty() {
            return MISSING_WARNING.to_string();
        }
        let names: Vec<String> = self
            .rejected
            .iter()
            .map(|(p, n)| format!("{} is {n} bytes, not {KEY_LEN}", p.display()))
            .collect();
        format!("{MISSING_WARNING} ({})", names.join("; "))
    }
}

/// Whether a file at `path` would be Harbor's secretKey by its name.
pub fn is_key_name(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let parent = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    name == "secretkey" || name == "secretKey" || (name == "key" && parent == "core")
}

/// The content is a key: exactly 16 bytes, or 16 and one newline.
pub fn is_key_content(bytes: &[u8]) -> bool {
    bytes.len() == KEY_LEN || (bytes.len() == KEY_LEN + 1 && bytes[KEY_LEN] == b'\n')
}

/// Look through the `--config` paths the way the configuration part reads them: a path
/// given is followed if it is a symlink; inside directories, symlinks are not followed
/// (a Secret volume's real files sit in its `..<timestamp>` directory).
pub fn find(paths: &[PathBuf]) -> Found {
    let mut found = Found::default();
    let mut budget = MAX_ENTRIES;
    for p in paths {
        let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
        match fs::metadata(&abs) {
            Ok(m) if m.is_file() => check(&abs, m.len(), &mut found),
            Ok(m) if m.is_dir() => walk(&abs, &mut found, &mut budget),
            _ => {}
        }
    }
    found
}

fn walk(dir: &Path, found: &mut Found, budget: &mut usize) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if *budget == 0 {
                return;
            }
            *budget -= 1;
            let path = e.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                check(&path, meta.len(), found);
            }
        }
    }
}

fn check(path: &Path, len: u64, found: &mut Found) {
    if !is_key_name(path) {
        return;
    }
    if len as usize > KEY_LEN + 1 || (len as usize) < KEY_LEN {
        found.rejected.push((path.to_path_buf(), len));
        return;
    }
    let mut buf = Vec::with_capacity(KEY_LEN + 2);
    let read = fs::File::open(path).and_then(|f| f.take(KEY_LEN as u64 + 2).read_to_end(&mut buf));
    if read.is_ok() && is_key_content(&buf) {
        found.keys.push(path.to_path_buf());
    } else {
        found.rejected.push((path.to_path_buf(), buf.len() as u64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for yes in [
            "/data/secret/keys/secretkey",
            "/etc/core/key",
            "/x/core/key",
            "/s/..2026/secretKey",
        ] {
            assert!(is_key_name(Path::new(yes)), "{yes}");
        }
        for no in [
            "/etc/key",
            "/etc/core/key.pem",
            "/a/SECRETKEY",
            "/a/secret_key",
        ] {
            assert!(!is_key_name(Path::new(no)), "{no}");
        }
    }

    #[test]
    fn content() {
        assert!(is_key_content(b"0123456789abcdef"));
        assert!(is_key_content(b"0123456789abcdef\n"));
        assert!(!is_key_content(b"0123456789abcdef\n\n"));
        assert!(!is_key_content(b"0123456789abcde"));
        assert!(!is_key_content(b"0123456789abcdefX"));
    }

    #[test]
    fn finds_compose_core_and_secret_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // docker-compose
        fs::create_dir_all(root.join("data/secret/keys")).unwrap();
        fs::write(root.join("data/secret/keys/secretkey"), "0123456789abcdef").unwrap();
        let f = find(&[root.join("data")]);
        assert_eq!(f.keys, vec![root.join("data/secret/keys/secretkey")]);
        // /etc/core/key given directly, through a symlink, with a newline
        fs::create_dir_all(root.join("etc/core")).unwrap();
        fs::write(root.join("real"), "0123456789abcdef\n").unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("etc/core/key")).unwrap();
        assert!(find(&[root.join("etc/core/key")]).found());
        // inside a directory a symlink is not followed, but a Secret's real file counts
        assert!(!find(&[root.join("etc")]).found());
        let ts = root.join("secret/..2026_01_01");
        fs::create_dir_all(&ts).unwrap();
        fs::write(ts.join("secretKey"), "0123456789abcdef").unwrap();
        std::os::unix::fs::symlink("..2026_01_01", root.join("secret/..data")).unwrap();
        std::os::unix::fs::symlink("..data/secretKey", root.join("secret/secretKey")).unwrap();
        assert_eq!(
            find(&[root.join("secret")]).keys,
            vec![ts.join("secretKey")]
        );
        // wrong sizes are named
        fs::write(root.join("secretkey"), "too short").unwrap();
        let f = find(&[root.join("secretkey")]);
        assert!(!f.found());
        assert_eq!(f.rejected, vec![(root.join("secretkey"), 9)]);
        assert!(f.warning().contains("is 9 bytes, not 16"));
    }
}
