//! pg_dump's schema SQL from a snapshot, read as hostile text before any of it reaches the
//! server: pg_dump's `\restrict` pair dropped, every other psql meta-command refused, and
//! the rest split into statements, so each runs on its own (over the extended protocol,
//! never through psql) and a failure names the statement.
//!
//! The scanner follows PostgreSQL's lexer as far as statement boundaries need: `--` and
//! nested `/* */` comments, `'…'` (with `E'…'` backslash escapes), `"…"`, `$tag$…$tag$`,
//! parentheses (multi-action rules) and psql's `BEGIN ATOMIC … END` heuristic. A
//! disagreement with the server (a string it ends elsewhere, with standard_conforming_strings
//! off) can only split a statement wrongly: the extended protocol takes one statement per
//! message, so the server refuses the pieces; nothing runs that the scanner did not see.

use crate::error::{Error, Result};

/// One statement of a schema section, with where it came from for error messages.
#[derive(Debug)]
pub struct Statement<'a> {
    /// From just after the previous statement's `;` to this one's, comments included.
    pub text: &'a str,
    /// 1-based line of the statement's first token.
    pub line: usize,
    /// The `Name: …; Type: …` header of the pg_dump entry the statement belongs to.
    pub entry: Option<&'a str>,
    first_line: &'a str,
    /// The first word and the last three tokens, outside quotes (for OWNER TO).
    first_word: Option<&'a str>,
    tail: [Option<&'a str>; 3],
    /// Every token, for the statements whose roles restore looks at (GRANT, REVOKE,
    /// ALTER DEFAULT PRIVILEGES); empty for the rest.
    words: Vec<&'a str>,
}

/// Keywords that name no role where a role list is read.
const NOT_ROLES: [&str; 4] = ["public", "current_user", "session_user", "current_role"];

/// A role name as the server reads it: quoted names unquoted, others lowercased.
fn role_name(token: &str) -> String {
    match token.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => token.to_ascii_lowercase(),
    }
}

/// The roles in a comma-separated list starting at `words[0]`, up to the first word that
/// is not part of one (WITH, GRANTED, CASCADE, IN, GRANT…).
fn role_list(words: &[&str]) -> Vec<String> {
    let mut roles = Vec::new();
    let mut expect_name = true;
    for w in words {
        match (*w, expect_name) {
            (",", false) => expect_name = true,
            (w, true) if w.eq_ignore_ascii_case("group") => {}
            (w, true) if w != "," => {
                let name = role_name(w);
                if !NOT_ROLES.contains(&name.as_str()) || w.starts_with('"') {
                    roles.push(name);
                }
                expect_name = false;
            }
            _ => break,
        }
    }
    roles
}

fn is_word<S: AsRef<str>>(t: Option<S>, w: &str) -> bool {
    t.is_some_and(|t| t.as_ref().eq_ignore_ascii_case(w))
}

impl Statement<'_> {
    /// `ALTER … OWNER TO role`: pg_dump writes one for every object it dumps. Restore makes
    /// the database owner (or the restoring role) own everything instead, so a non-superuser
    /// can apply the schema and a snapshot cannot hand objects to other roles.
    pub fn is_owner_change(&self) -> bool {
        let is = is_word::<&str>;
        is(self.first_word, "ALTER")
            && is(self.tail[0], "OWNER")
            && is(self.tail[1], "TO")
            && self.tail[2].is_some()
    }

    /// The roles a `GRANT … TO` or `REVOKE … FROM` names as grantees (not PUBLIC or
    /// CURRENT_USER); `None` for other statements.
    pub fn grantees(&self) -> Option<Vec<String>> {
        let first = self.words.first();
        let keyword = if is_word(first, "GRANT") {
            "TO"
        } else if is_word(first, "REVOKE") {
            "FROM"
        } else {
            return None;
        };
        // The grantee list follows the last TO/FROM: object names before it that read the
        // same are reserved words, which pg_dump quotes.
        let at = self
            .words
            .iter()
            .rposition(|w| w.eq_ignore_ascii_case(keyword))?;
        Some(role_list(&self.words[at + 1..]))
    }

    /// `ALTER DEFAULT PRIVILEGES FOR ROLE r, …`: the roles whose future objects it is about,
    /// and the roles its GRANT or REVOKE names; `None` for other statements.
    pub fn default_privileges(&self) -> Option<(Vec<String>, Vec<String>)> {
        let w = &self.words;
        if !(is_word(w.first(), "ALTER")
            && is_word(w.get(1), "DEFAULT")
            && is_word(w.get(2), "PRIVILEGES"))
        {
            return None;
        }
        let owners = match is_word(w.get(3), "FOR") {
            true => role_list(&w[5.min(w.len())..]),
            false => Vec::new(),
        };
        let keyword = w
            .iter()
            .rposition(|t| t.eq_ignore_ascii_case("TO") || t.eq_ignore_ascii_case("FROM"));
        let grantees = keyword
            .map(|at| role_list(&w[at + 1..]))
            .unwrap_or_default();
        Some((owners, grantees))
    }

    /// `SET [SESSION|LOCAL] ROLE …` or `RESET ROLE`: a change of the role the rest of the
    /// SQL runs as, which pg_dump never writes (restore refuses it).
    pub fn changes_role(&self) -> bool {
        let w = &self.words;
        let at = match w.first() {
            f if is_word(f, "RESET") => 1,
            f if is_word(f, "SET") => match w.get(1) {
                t if is_word(t, "SESSION") || is_word(t, "LOCAL") => 2,
                _ => 1,
            },
            _ => return false,
        };
        is_word(w.get(at), "ROLE")
    }

    /// `SET SESSION AUTHORIZATION …` or `RESET SESSION AUTHORIZATION`: pg_dump writes the
    /// pair around grants made by a role other than the owner. Only a superuser may run it.
    pub fn is_session_authorization(&self) -> bool {
        let is = is_word::<&str>;
        (is(self.first_word, "SET")
            && is(self.tail[0], "SESSION")
            && is(self.tail[1], "AUTHORIZATION"))
            || (is(self.first_word, "RESET")
                && is(self.tail[1], "SESSION")
                && is(self.tail[2], "AUTHORIZATION"))
    }

    /// What to call the statement in an error: its entry header, else its first line,
    /// escaped (it came from the snapshot) and cut short.
    pub fn label(&self) -> String {
        let text = self.entry.unwrap_or(self.first_line);
        let cut: String = text.chars().take(120).collect();
        let more = if cut.len() < text.len() { "…" } else { "" };
        format!("{:?}{more} (line {})", cut, self.line)
    }
}

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

/// The index just past the string or quoted identifier opened by the quote at `b[start]`
/// (or the end of the text), counting the newlines inside into `line`.
fn skip_quoted(b: &[u8], start: usize, escapes: bool, line: &mut usize) -> usize {
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' if escapes => {
                i += 1;
                *line += usize::from(b.get(i) == Some(&b'\n'));
            }
            q if q == quote && b.get(i + 1) == Some(&quote) => i += 1,
            q if q == quote => break,
            b'\n' => *line += 1,
            _ => {}
        }
        i += 1;
    }
    (i + 1).min(b.len())
}

fn ident_char(c: u8) -> bool {
    ident_start(c) || c.is_ascii_digit() || c == b'$'
}

/// What the scanner reports besides statements.
enum Event {
    /// A backslash outside quotes and comments, at byte `at`, on `line`.
    Backslash { at: usize, line: usize },
}

/// Split `sql` into statements; `on_event` sees every unquoted backslash and may stop the
/// scan with an error.
fn scan<'a>(
    sql: &'a str,
    mut on_event: impl FnMut(Event, bool) -> Result<()>,
) -> Result<Vec<Statement<'a>>> {
    let b = sql.as_bytes();
    let (mut i, mut line) = (0usize, 1usize);
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut entry: Option<&str> = None;
    // The statement being read.
    let mut first: Option<(usize, usize)> = None; // (byte, line) of its first token
    let mut first_word: Option<&str> = None;
    let mut tail: [Option<&str>; 3] = [None; 3];
    let mut words: Vec<&str> = Vec::new();
    let (mut paren, mut begin_depth) = (0usize, 0usize);
    let mut idents: Vec<u8> = Vec::new(); // first letters of its first words, lowercased
    let mut ident_count = 0usize;
    let mut seen_any = false; // any statement token in the whole text so far
    macro_rules! token {
        ($s:expr, $e:expr) => {{
            if first.is_none() {
                first = Some(($s, line));
            }
            seen_any = true;
            tail = [tail[1], tail[2], Some(&sql[$s..$e])];
            if first_word.is_some_and(|w| {
                ["grant", "revoke", "alter", "set", "reset"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k))
            }) {
                words.push(&sql[$s..$e]);
            }
        }};
    }
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let end = sql[i..].find('\n').map_or(b.len(), |n| i + n);
                let comment = &sql[i..end];
                if let Some(h) = comment.strip_prefix("-- ") {
                    if h.starts_with("Name: ") {
                        entry = Some(h.split("; Owner:").next().unwrap_or(h).trim_end());
                    }
                }
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        line += usize::from(b[i] == b'\n');
                        i += 1;
                    }
                }
            }
            b'\'' | b'"' => {
                let s = i;
                // E'…' strings take backslash escapes; '…' and "…" only doubled quotes.
                let escapes = c == b'\''
                    && i > 0
                    && matches!(b[i - 1], b'E' | b'e')
                    && (i < 2 || !ident_char(b[i - 2]));
                i = skip_quoted(b, i, escapes, &mut line);
                token!(s, i);
            }
            b'$' if i == 0 || !ident_char(b[i - 1]) => {
                let s = i;
                let mut j = i + 1;
                if b.get(j).is_some_and(|&c| ident_start(c)) {
                    while b.get(j).is_some_and(|&c| ident_char(c) && c != b'$') {
                        j += 1;
                    }
                }
                if b.get(j) == Some(&b'$') {
                    let tag = &sql[i..=j];
                    let body = j + 1;
                    let end = sql[body..]
                        .find(tag)
                        .map_or(b.len(), |n| body + n + tag.len());
                    line += sql[i..end].matches('\n').count();
                    i = end;
                } else {
                    i += 1; // a parameter like $1
                }
                token!(s, i);
            }
            b'\\' => {
                on_event(Event::Backslash { at: i, line }, seen_any)?;
                i += 1;
            }
            b'(' | b')' | b';' => {
                if c == b';' && paren == 0 && begin_depth == 0 {
                    if let Some((at, l)) = first {
                        let rest = &sql[at..];
                        out.push(Statement {
                            text: &sql[start..=i],
                            line: l,
                            entry,
                            first_line: rest.lines().next().unwrap_or(rest).trim_end(),
                            first_word,
                            tail,
                            words: std::mem::take(&mut words),
                        });
                    }
                    i += 1;
                    start = i;
                    (first, first_word, tail) = (None, None, [None; 3]);
                    words.clear();
                    idents.clear();
                    ident_count = 0;
                    continue;
                }
                if c == b'(' {
                    paren += 1;
                } else if c == b')' {
                    paren = paren.saturating_sub(1);
                }
                token!(i, i + 1);
                i += 1;
            }
            c if ident_start(c) => {
                let s = i;
                while i < b.len() && ident_char(b[i]) {
                    i += 1;
                }
                let word = &sql[s..i];
                if first.is_none() {
                    first_word = Some(word);
                }
                token!(s, i);
                // psql's heuristic: inside CREATE [OR REPLACE] FUNCTION|PROCEDURE, BEGIN …
                // END (and CASE … END within it) do not end at a semicolon.
                let lower = word.to_ascii_lowercase();
                if idents.len() < 4
                    && ["create", "function", "procedure", "or", "replace"].contains(&&*lower)
                    && ident_count == idents.len()
                {
                    idents.push(lower.as_bytes()[0]);
                }
                ident_count += 1;
                let routine = matches!(
                    idents.as_slice(),
                    [b'c', b'f', ..] | [b'c', b'p', ..] | [b'c', b'o', b'r', b'f' | b'p', ..]
                );
                if routine && paren == 0 {
                    match &*lower {
                        "begin" => begin_depth += 1,
                        "case" if begin_depth > 0 => begin_depth += 1,
                        "end" if begin_depth > 0 => begin_depth -= 1,
                        _ => {}
                    }
                }
            }
            // ASCII only: bytes from 0x80 up are identifier characters.
            _ => {
                token!(i, i + 1);
                i += 1;
            }
        }
    }
    if let Some((at, l)) = first {
        let rest = &sql[at..];
        out.push(Statement {
            text: &sql[start..],
            line: l,
            entry,
            first_line: rest.lines().next().unwrap_or(rest).trim_end(),
            first_word,
            tail,
            words,
        });
    }
    Ok(out)
}

fn meta_command(line: usize) -> Error {
    Error::Refused(format!(
        "the snapshot's schema SQL holds a psql meta-command (line {line}); refusing it"
    ))
}

/// `\restrict KEY` / `\unrestrict KEY` as pg_dump 17.6+ writes them: the whole line, an
/// alphanumeric key.
fn restrict_line<'a>(line: &'a str, command: &str) -> Option<&'a str> {
    let key = line.strip_prefix(command)?.strip_prefix(' ')?;
    (!key.is_empty() && key.len() <= 64 && key.bytes().all(|c| c.is_ascii_alphanumeric()))
        .then_some(key)
}

/// A schema section checked and cleaned: UTF-8; pg_dump's `\restrict KEY` line (before
/// any statement) and `\unrestrict KEY` line (the same key, after every statement)
/// dropped; any other backslash outside a quoted string or comment refused (exit 4).
pub fn checked(sql: &[u8]) -> Result<String> {
    let text = std::str::from_utf8(sql).map_err(|e| {
        Error::Refused(format!(
            "the snapshot's schema SQL is not UTF-8 (at byte {}); refusing it",
            e.valid_up_to()
        ))
    })?;
    let mut key: Option<&str> = None;
    let mut drop: Vec<(usize, usize)> = Vec::new();
    let mut unrestrict_line: Option<usize> = None;
    scan(text, |Event::Backslash { at, line }, seen_statement| {
        let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
        let line_end = text[at..].find('\n').map_or(text.len(), |n| at + n);
        let whole = &text[line_start..line_end];
        if unrestrict_line.is_some() || line_start != at {
            return Err(meta_command(line));
        }
        match key {
            None if !seen_statement => {
                key = Some(restrict_line(whole, "\\restrict").ok_or_else(|| meta_command(line))?);
            }
            Some(k) if restrict_line(whole, "\\unrestrict") == Some(k) => {
                unrestrict_line = Some(line);
            }
            _ => return Err(meta_command(line)),
        }
        drop.push((line_start, line_end));
        Ok(())
    })?;
    // Nothing may follow `\unrestrict`: it closes the dump.
    if let (Some(line), Some(&(_, end))) = (unrestrict_line, drop.last()) {
        if !scan(&text[end..], |_, _| Ok(()))?.is_empty() {
            return Err(meta_command(line));
        }
    }
    let mut clean = String::with_capacity(text.len());
    let mut from = 0;
    for (s, e) in drop {
        clean.push_str(&text[from..s]);
        from = e; // the newline stays: line numbers keep meaning the snapshot's
    }
    clean.push_str(&text[from..]);
    Ok(clean)
}

/// The statements of a section that [`checked`] returned.
pub fn statements(sql: &str) -> Vec<Statement<'_>> {
    // `checked` refused every backslash already; a stray one is left to the server.
    scan(sql, |_, _| Ok(())).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<String> {
        statements(sql)
            .iter()
            .map(|s| s.text.trim().to_string())
            .collect()
    }

    #[test]
    fn grantees_and_default_privileges_are_read_as_the_server_would() {
        let sql = "GRANT SELECT ON TABLE public.\"to\" TO harbor_reader, \"Odd \"\"Name\", PUBLIC;\n\
            REVOKE ALL ON SCHEMA public FROM PUBLIC;\n\
            GRANT ALL ON SEQUENCE public.s TO GROUP Ops WITH GRANT OPTION;\n\
            ALTER DEFAULT PRIVILEGES FOR ROLE harbor IN SCHEMA public GRANT SELECT ON TABLES TO reader;\n\
            ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC;\n\
            SET SESSION AUTHORIZATION harbor;\nRESET SESSION AUTHORIZATION;\nALTER TABLE t OWNER TO x;";
        let s = statements(sql);
        assert_eq!(
            s[0].grantees().unwrap(),
            vec!["harbor_reader".to_string(), "Odd \"Name".to_string()]
        );
        assert_eq!(s[1].grantees().unwrap(), Vec::<String>::new());
        assert_eq!(s[2].grantees().unwrap(), vec!["ops".to_string()]);
        assert_eq!(
            s[3].default_privileges().unwrap(),
            (vec!["harbor".to_string()], vec!["reader".to_string()])
        );
        assert_eq!(s[4].default_privileges().unwrap(), (vec![], vec![]));
        assert!(s[5].is_session_authorization() && s[6].is_session_authorization());
        assert!(s[7].grantees().is_none() && s[7].default_privileges().is_none());
        assert!(!s[7].is_session_authorization() && s[7].is_owner_change());
        let roles = statements("RESET ROLE; SET ROLE x; set local role x; SET SESSION ROLE x; SET search_path = ''; SET SESSION AUTHORIZATION x;");
        let changes: Vec<bool> = roles.iter().map(|s| s.changes_role()).collect();
        assert_eq!(changes, [true, true, true, true, false, false]);
    }

    #[test]
    fn statements_split_at_top_level_semicolons_only() {
        let sql = "SET a = 1;\n-- x; y\nCREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\n\
            CREATE RULE r AS ON INSERT TO t DO INSTEAD (INSERT INTO u VALUES (1); DELETE FROM v);\n\
            COMMENT ON TABLE t IS 'it''s; fine';\nCOMMENT ON TABLE t IS E'a\\'; b';\n\
            CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END;\n\
            /* a /* nested; */ comment; */ SELECT \"we;ird\";\nSELECT $1;";
        let t = texts(sql);
        assert_eq!(t.len(), 8, "{t:#?}");
        assert!(t[1].ends_with("LANGUAGE sql;"));
        assert!(t[2].ends_with("DELETE FROM v);"));
        assert!(t[5].ends_with("SELECT 2; END;"), "{}", t[5]);
        assert!(t[6].ends_with("\"we;ird\";"));
    }

    #[test]
    fn owner_changes_and_labels() {
        let sql = "--\n-- Name: t; Type: TABLE; Schema: public; Owner: postgres\n--\n\n\
            CREATE TABLE public.t (x int);\n\nALTER TABLE public.t OWNER TO postgres;\n\
            ALTER TABLE public.t OWNER TO \"Odd Role\";\nALTER TABLE public.t ALTER x SET DEFAULT 1;\n";
        let s = statements(sql);
        let owners: Vec<bool> = s.iter().map(Statement::is_owner_change).collect();
        assert_eq!(owners, [false, true, true, false]);
        assert_eq!(
            s[0].label(),
            "\"Name: t; Type: TABLE; Schema: public\" (line 5)"
        );
        let s = statements("SELECT '\x1b[2J' ;");
        assert!(!s[0].label().contains('\x1b'), "{}", s[0].label());
    }

    #[test]
    fn restrict_lines_are_dropped_where_pg_dump_writes_them() {
        let sql = "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc123\n\nSET a = 1;\nCREATE TABLE t (x int);\n\n--\n-- done\n--\n\n\\unrestrict abc123\n\n";
        let clean = checked(sql.as_bytes()).unwrap();
        assert!(!clean.contains('\\'), "{clean}");
        assert_eq!(clean.lines().count(), sql.lines().count());
        assert_eq!(texts(&clean).len(), 2);
        // Backslashes inside strings, identifiers and comments are data.
        checked(
            b"COMMENT ON TABLE t IS 'a\\! b';\n-- \\! x\nSELECT E'\\\\';\nSELECT $$\n\\! id\n$$;",
        )
        .unwrap();
    }

    #[test]
    fn every_other_backslash_is_refused_with_its_line() {
        let refused = [
            ("\\! touch /tmp/x\n", 1),
            ("SET a = 1;\n\\set x `id`\n", 2),
            ("SELECT 1;\n\\copy t to program 'id'\n", 2),
            ("\\o |id\nSELECT 1;\n", 1),
            ("SELECT 1; \\! id\n", 1),
            ("SELECT 1;\n\\restrict k\n", 2),
            ("\\restrict k\nSELECT 1;\n\\unrestrict other\n", 3),
            ("\\restrict k\nSELECT 1;\n\\unrestrict k\nSELECT 2;\n", 3),
            ("\\restrict k;\\! id\n", 1),
            ("\\restrict k\n\\restrict k\n", 2),
            ("\\connect other\n", 1),
            ("SELECT 'unterminated\n';\n\\gexec\n", 3),
        ];
        for (sql, line) in refused {
            let e = checked(sql.as_bytes()).unwrap_err();
            assert!(matches!(e, Error::Refused(_)), "{sql:?}: {e}");
            assert_eq!(
                e.to_string(),
                format!("the snapshot's schema SQL holds a psql meta-command (line {line}); refusing it"),
                "{sql:?}"
            );
        }
        assert!(matches!(checked(b"SELECT '\xff';"), Err(Error::Refused(_))));
    }
}
