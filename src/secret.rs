//! Passwords read from a file or an environment variable, never from the command line, and
//! wiped from memory when dropped.

use std::fmt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A password. `Debug` prints nothing of it; [`Password::expose`] is the only way in.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    pub fn new(p: impl Into<String>) -> Self {
        Password(Zeroizing::new(p.into()))
    }

    /// The password itself, for the one request header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// The password from `file` (named `file_flag` in messages), else from the variable `env`;
/// `None` when neither is given. One trailing newline (as `echo` or a Secret edited by hand
/// leaves) is dropped; an empty password is refused.
pub fn load_password(file: Option<&Path>, file_flag: &str, env: &str) -> Result<Option<Password>> {
    let raw = Zeroizing::new(match file {
        Some(f) => std::fs::read_to_string(f).map_err(|e| {
            Error::Usage(format!(
                "{file_flag} {}: {e}; give a readable file holding the password",
                f.display()
            ))
        })?,
        None => match std::env::var(env) {
            Ok(p) => p,
            Err(_) => return Ok(None),
        },
    });
    let p = raw
        .strip_suffix("\r\n")
        .or_else(|| raw.strip_suffix('\n'))
        .unwrap_or(&raw);
    if p.is_empty() {
        return Err(Error::Usage(match file {
            Some(f) => format!("{file_flag} {} is empty", f.display()),
            None => format!("{env} is empty"),
        }));
    }
    Ok(Some(Password::new(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(f: &Path) -> Result<Option<String>> {
        load_password(Some(f), "--password-file", "UNUSED")
            .map(|p| p.map(|p| p.expose().to_string()))
    }

    #[test]
    fn passwords_lose_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        assert_eq!(load(&f).unwrap().as_deref(), Some("s3cret"));
        std::fs::write(&f, "s3cret \n\n").unwrap();
        assert_eq!(load(&f).unwrap().as_deref(), Some("s3cret \n"));
        std::fs::write(&f, "\n").unwrap();
        assert!(matches!(load(&f), Err(Error::Usage(_))));
        assert!(matches!(
            load(&dir.path().join("nope")),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn debug_hides_the_password() {
        assert!(!format!("{:?}", Password::new("hunter2")).contains("hunter2"));
    }
}
