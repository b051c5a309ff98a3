//! Which of a snapshot's privilege statements an empty-mode restore runs on its target.
//!
//! pg_dump names the source's roles: the Helm chart's `postgres`, CloudNativePG's `app`, an
//! external database's own. A restore into another server, or as another role, must not fail
//! on them. Objects are owned by the loading role (FORMAT.md: owner changes are skipped), so:
//!
//! - `GRANT`/`REVOKE` naming a role the target lacks is left out;
//! - `ALTER DEFAULT PRIVILEGES FOR ROLE r` for a role other than the loading role is left
//!   out (it is about r's future objects, and only r or a superuser may run it), as is one
//!   naming a missing grantee;
//! - pg_dump's `SET/RESET SESSION AUTHORIZATION` around grants made by a non-owner is left
//!   out: only a superuser may run it, and the grant then comes from the loading role.
//!
//! Every role left out is reported once, so the operator can create it and grant again.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use tokio_postgres::Client;

use super::conn::pg_error;
use super::sql::Statement;
use crate::error::Result;

pub struct Grants {
    /// Every role on the target server.
    roles: HashSet<String>,
    /// The role that will own what the restore creates.
    owner: String,
    left_out: Mutex<BTreeSet<String>>,
}

impl Grants {
    pub async fn read(client: &Client, owner: &str) -> Result<Self> {
        let rows = client
            .query("SELECT rolname::text FROM pg_catalog.pg_roles", &[])
            .await
            .map_err(|e| pg_error("listing the target's roles", e))?;
        Ok(Grants {
            roles: rows.iter().map(|r| r.get(0)).collect(),
            owner: owner.to_string(),
            left_out: Mutex::default(),
        })
    }

    /// Whether to run `s`; a statement left out records why.
    pub fn keep(&self, s: &Statement) -> bool {
        if s.is_session_authorization() {
            self.note(
                "grants made by roles other than the owner (made by the restoring role instead)",
            );
            return false;
        }
        let (owners, grantees) = match (s.grantees(), s.default_privileges()) {
            (Some(g), _) => (Vec::new(), g),
            (None, Some(pair)) => pair,
            (None, None) => return true,
        };
        let foreign: Vec<&String> = owners.iter().filter(|r| **r != self.owner).collect();
        let missing: Vec<&String> = grantees
            .iter()
            .filter(|r| !self.roles.contains(*r))
            .collect();
        for r in &foreign {
            self.note(&format!("default privileges for role {r}"));
        }
        for r in &missing {
            self.note(&format!("grants to role {r}, which this server lacks"));
        }
        foreign.is_empty() && missing.is_empty()
    }

    fn note(&self, what: &str) {
        self.left_out.lock().expect("lock").insert(what.to_string());
    }

    /// What was left out, for the report and a warning.
    pub fn left_out(&self) -> Vec<String> {
        self.left_out
            .lock()
            .expect("lock")
            .iter()
            .cloned()
            .collect()
    }
}
