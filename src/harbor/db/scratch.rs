//! Who runs a snapshot's SQL on an empty-mode restore: never a superuser, since the SQL
//! comes from whoever could write the snapshot (the backup-only key is enough).
//!
//! When `--postgres` names a role that is not a superuser, that role runs it. When it is a
//! superuser (the drill's usual case), drydock creates a scratch role
//! `drydock_restore_<8 hex>` with a random password and no role attributes, lets it
//! create in the target database (CONNECT and CREATE on it, and ownership of schema
//! `public` for the restore's duration), and runs the schema, COPY and sequences as it.
//! Afterwards the superuser gives everything the scratch role owns to the database's
//! owner (or `--owner`), puts schema `public` back, and drops the role, on failure too.
//!
//! With `--owner ROLE` and a restoring role that is not a superuser, every session runs
//! `SET ROLE`, so what the restore creates belongs to ROLE (the restoring role must be a
//! member of it).

use tokio_postgres::Client;

use super::conn::{pg_error, PgTarget};
use super::grants::Grants;
use super::{quote_ident, quote_literal};
use crate::error::{Error, Result};

/// The role and connection settings the snapshot's SQL runs with.
pub struct Loader {
    pub target: PgTarget,
    /// Which of the snapshot's privilege statements this target can take.
    pub grants: Grants,
    /// `--owner` for a restoring role that is not a superuser: every session sets it.
    set_role: Option<String>,
    scratch: Option<Scratch>,
    /// The superuser's target, to remove the scratch role if the restore is dropped.
    admin: PgTarget,
}

struct Scratch {
    role: String,
    /// Who gets what the scratch role created: `--owner`, else the database's owner.
    db_owner: String,
    /// The owner of schema `public` before the restore, when the schema exists.
    public_owner: Option<String>,
}

/// The role to load with: `target`'s own if it is not a superuser, else a new scratch role.
/// `owner` is who should own the restored objects (default: that role, or the database's
/// owner when a scratch role loads).
pub async fn loader(admin: &Client, target: &PgTarget, owner: Option<&str>) -> Result<Loader> {
    let row = admin
        .query_one(
            "SELECT r.rolsuper, pg_catalog.pg_get_userbyid(d.datdba)::text,
                    (SELECT pg_catalog.pg_get_userbyid(n.nspowner)::text FROM pg_catalog.pg_namespace n
                     WHERE n.nspname OPERATOR(pg_catalog.=) 'public')
             FROM pg_catalog.pg_roles r, pg_catalog.pg_database d
             WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER
               AND d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()",
            &[],
        )
        .await
        .map_err(|e| pg_error("reading the restoring role's rights", e))?;
    if let Some(owner) = owner {
        require_role(admin, target, owner).await?;
    }
    if !row.get::<_, bool>(0) {
        let loading = owner.unwrap_or(&target.user);
        return Ok(Loader {
            grants: Grants::read(admin, loading).await?,
            target: target.clone(),
            set_role: owner.map(str::to_string),
            scratch: None,
            admin: target.clone(),
        });
    }
    let scratch = Scratch {
        role: format!("drydock_restore_{:08x}", rand::random::<u32>()),
        db_owner: owner.map_or_else(|| row.get(1), str::to_string),
        public_owner: row.get(2),
    };
    let password = hex::encode(rand::random::<[u8; 32]>());
    // One simple query is one transaction: a failure leaves no role behind.
    scratch.create(admin, &password, &target.dbname).await?;
    tracing::info!(role = %scratch.role, "the snapshot's SQL runs as a scratch role without superuser rights");
    Ok(Loader {
        grants: Grants::read(admin, &scratch.role).await?,
        target: target.as_role(&scratch.role, &password),
        set_role: None,
        scratch: Some(scratch),
        admin: target.clone(),
    })
}

/// `--owner` must name a role of the target server.
async fn require_role(admin: &Client, target: &PgTarget, role: &str) -> Result<()> {
    let exists = admin
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) $1",
            &[&role],
        )
        .await
        .map_err(|e| pg_error("looking up the --owner role", e))?
        .is_some();
    match exists {
        true => Ok(()),
        false => Err(Error::Usage(format!(
            "--owner {role}: no such role on {}; create it first, or leave --owner out",
            target.describe()
        ))),
    }
}

impl Loader {
    /// Prepare a session of the loading role: `SET ROLE` to `--owner`, when set.
    pub async fn enter(&self, client: &Client) -> Result<()> {
        let Some(role) = &self.set_role else {
            return Ok(());
        };
        client
            .batch_execute(&format!("SET ROLE {}", quote_ident(role)))
            .await
            .map_err(|e| {
                Error::Usage(format!(
                    "--owner {role}: {} may not act as {role} ({}); run GRANT {} TO {}, or restore as a superuser",
                    self.target.user,
                    e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_string()),
                    quote_ident(role),
                    quote_ident(&self.target.user)
                ))
            })
    }

    /// After the load with `--owner`: everything restored belongs to that role. The
    /// snapshot's SQL could have changed role in ways no statement filter sees (a function
    /// calling `set_config('role', …)`): then the restore fails instead of reporting an
    /// owner it did not give.
    pub async fn check_owner(&self, client: &Client) -> Result<()> {
        let Some(owner) = &self.set_role else {
            return Ok(());
        };
        let rows = client
            .query(
                "SELECT n.nspname::text || '.' || c.relname::text FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind IN ('r','p','v','m','S','f')
                    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
                    AND pg_catalog.pg_get_userbyid(c.relowner) OPERATOR(pg_catalog.<>) $1
                 UNION ALL
                 SELECT n.nspname::text || '.' || p.proname::text FROM pg_catalog.pg_proc p
                   JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
                    AND pg_catalog.pg_get_userbyid(p.proowner) OPERATOR(pg_catalog.<>) $1
                 LIMIT 5",
                &[owner],
            )
            .await
            .map_err(|e| pg_error("checking who owns the restored objects", e))?;
        if rows.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        Err(Error::Refused(format!(
            "--owner {owner}: the snapshot's SQL created objects {owner} does not own ({}); it changed role during the restore, so it is refused: drop and recreate the target database",
            names.join(", ")
        )))
    }

    /// A connection as the loading role; a server that will not let the scratch role log
    /// in by password gets a message saying what to change.
    pub async fn connect(&self) -> Result<Client> {
        let client = self.connect_role().await?;
        self.enter(&client).await?;
        Ok(client)
    }

    async fn connect_role(&self) -> Result<Client> {
        let client = self.target.connect().await;
        match (client, &self.scratch) {
            (Err(Error::Key(why)), Some(s)) => Err(Error::Usage(format!(
                "the server refused a password login for drydock's scratch restore role {} ({why}); connect --postgres as the target database's owner (a role that is not a superuser), or allow password (scram-sha-256) logins for this host in pg_hba.conf",
                s.role
            ))),
            (client, _) => client,
        }
    }

    /// Drop the scratch role, if one was made, after giving what it owns to the database
    /// owner. Best effort: a failure is logged with what to run by hand.
    pub async fn finish(mut self, admin: &Client) {
        let Some(s) = self.scratch.take() else {
            return;
        };
        if admin.is_closed() {
            match self.admin.connect().await {
                Ok(fresh) => s.remove(&fresh).await,
                Err(e) => s.left_behind(&e.to_string()),
            }
        } else {
            s.remove(admin).await;
        }
    }
}

/// A restore dropped before [`Loader::finish`] (`--timeout`) still removes its role: a
/// task does it on a fresh connection while the runtime shuts down (best effort).
impl Drop for Loader {
    fn drop(&mut self) {
        let Some(s) = self.scratch.take() else {
            return;
        };
        let admin = self.admin.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return s.left_behind("the restore stopped outside a runtime");
        };
        rt.spawn(async move {
            match admin.connect().await {
                Ok(c) => s.remove(&c).await,
                Err(e) => s.left_behind(&e.to_string()),
            }
        });
    }
}

/// Resolves on SIGTERM or SIGINT, so a restore can remove its scratch role before it
/// stops (never, when the handlers cannot be installed).
pub async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => std::future::pending().await,
    }
}

impl Scratch {
    async fn create(&self, admin: &Client, password: &str, dbname: &str) -> Result<()> {
        let role = quote_ident(&self.role);
        // A SCRAM verifier, not the password: statements can end up in the server's log.
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        let mut sql = format!(
            "SET search_path = pg_catalog, pg_temp;
             CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT PASSWORD {};
             GRANT CONNECT, CREATE ON DATABASE {} TO {role};",
            quote_literal(&verifier),
            quote_ident(dbname)
        );
        if self.public_owner.is_some() {
            sql += &format!("ALTER SCHEMA public OWNER TO {role};");
        }
        admin
            .batch_execute(&sql)
            .await
            .map_err(|e| pg_error("creating the scratch restore role", e))
    }

    async fn remove(&self, admin: &Client) {
        let role = quote_ident(&self.role);
        // (statement, whether what follows depends on it): DROP OWNED must never run after
        // a failed REASSIGN, or it would drop the restored schema.
        let mut steps = vec![
            (
                format!(
                    "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
                     WHERE usename OPERATOR(pg_catalog.=) {}",
                    quote_literal(&self.role)
                ),
                false,
            ),
            (
                format!(
                    "REASSIGN OWNED BY {role} TO {}",
                    quote_ident(&self.db_owner)
                ),
                true,
            ),
        ];
        if let Some(owner) = &self.public_owner {
            let sql = format!("ALTER SCHEMA public OWNER TO {}", quote_ident(owner));
            steps.push((sql, false));
        }
        steps.push((format!("DROP OWNED BY {role}"), true));
        steps.push((format!("DROP ROLE {role}"), true));
        for (step, needed) in steps {
            if let Err(e) = admin.batch_execute(&step).await {
                let e = pg_error("removing the scratch restore role", e).to_string();
                if needed {
                    self.left_behind(&e);
                    return;
                }
                tracing::warn!(role = %self.role, error = %e, "a step of the scratch role's clean-up failed");
            }
        }
    }

    fn left_behind(&self, why: &str) {
        let role = quote_ident(&self.role);
        tracing::error!(
            role = %self.role,
            error = %why,
            "the scratch restore role is left behind; as a superuser in the target database run: REASSIGN OWNED BY {role} TO {}; DROP OWNED BY {role}; DROP ROLE {role}",
            quote_ident(&self.db_owner)
        );
    }
}
