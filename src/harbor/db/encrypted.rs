//! Proof that a secretKey opens a database: every `<enc-v1>` value Harbor encrypted with it
//! is decrypted, and must come out as text (or JSON, where Harbor stores JSON).
//!
//! Harbor's `ReversibleEncrypt` (src/common/utils/encrypt.go) is AES-128 in CFB mode with
//! the 16-byte secretKey, a random 16-byte IV, and `"<enc-v1>" + base64(IV ‖ ciphertext)`.
//! CFB carries no MAC, so the only way to tell a wrong key is that its "plaintext" is noise:
//! a value opens when it decrypts to UTF-8 without control characters (tab, CR and LF
//! allowed: a registry password can be a JSON key file), and, for the columns Harbor fills
//! with JSON, to JSON. A wrong key turns every byte into a uniformly random one, so an
//! n-byte value passes by chance with probability about 0.46^n (docs/OPERATIONS.md, "The secretKey").
//!
//! Plaintext lives only in a [`Zeroizing`] buffer for the length of one check; nothing of
//! it is kept, printed or logged — only counts per column leave this module.

use std::collections::BTreeMap;
use std::sync::Arc;

use aes::Aes128;
use base64::Engine;
use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
use serde::Serialize;
use zeroize::Zeroizing;

use super::TableEntry;
use crate::harbor::secretkey::{is_key_content, KEY_LEN};

/// What Harbor puts before the base64 of an encrypted value.
pub const HEADER: &str = "<enc-v1>";

/// AES block and CFB IV size.
const IV_LEN: usize = 16;

/// Harbor's secretKey as AES key bytes; `Debug` shows none of it.
#[derive(Clone)]
pub struct HarborKey(Zeroizing<[u8; KEY_LEN]>);

impl HarborKey {
    /// The key from a key file's bytes: 16 bytes, or 16 and one newline (as Harbor reads
    /// it); `None` for anything else.
    pub fn from_file_bytes(bytes: &[u8]) -> Option<Self> {
        if !is_key_content(bytes) {
            return None;
        }
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        k.copy_from_slice(&bytes[..KEY_LEN]);
        Some(HarborKey(k))
    }

    /// Whether `value` (what follows [`HEADER`]) decrypts with this key to a plaintext of
    /// the `kind` Harbor stores there.
    pub fn opens(&self, value: &[u8], kind: Plain) -> Opened {
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(value) else {
            return Opened::Malformed;
        };
        let mut raw = Zeroizing::new(raw);
        if raw.len() < IV_LEN {
            return Opened::Malformed;
        }
        let (iv, text) = raw.split_at_mut(IV_LEN);
        let key: &[u8; KEY_LEN] = &self.0;
        cfb_mode::Decryptor::<Aes128>::new(key.into(), (&*iv).into()).decrypt(text);
        if text.is_empty() {
            return Opened::Empty;
        }
        match plausible(text, kind) {
            true => Opened::Yes,
            false => Opened::No,
        }
    }
}

impl std::fmt::Debug for HarborKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HarborKey(<redacted>)")
    }
}

/// What Harbor encrypts in a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Plain {
    Text,
    Json,
}

/// The outcome of one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    Yes,
    /// Decrypts to garbage: another key encrypted it.
    No,
    /// IV only, no ciphertext: any key "opens" it, so it proves nothing.
    Empty,
    /// Not base64, or shorter than an IV: Harbor cannot decrypt it with any key.
    Malformed,
}

/// UTF-8 with no control character but tab, CR and LF; JSON too where Harbor stores JSON.
fn plausible(text: &[u8], kind: Plain) -> bool {
    let Ok(s) = std::str::from_utf8(text) else {
        return false;
    };
    if s.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return false;
    }
    kind == Plain::Text || serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
}

/// A column Harbor encrypts with the secretKey, read from Harbor's source: the Go code that
/// calls `utils.ReversibleEncrypt` or `config.EncryptSecret`, and the migrations that made
/// the column.
pub struct Encrypted {
    pub table: &'static str,
    pub column: &'static str,
    pub plain: Plain,
    /// The first Harbor schema version (`schema_migrations.version`) that writes it.
    pub since: i64,
}

/// Every encrypted column, oldest first. Harbor 2.15.2 began encrypting scanner and
/// preheat credentials without a migration (its schema stays 180), and reads the older
/// plaintext rows as they are: in those two columns a value without the header is legacy
/// plaintext, not a fault.
pub const ENCRYPTED: &[Encrypted] = &[
    // src/pkg/reg/manager.go; renamed from `password` in 0004_1.8.0.
    col("registry", "access_secret", Plain::Text, 0),
    // src/core/controllers/oidc.go secretAndToken: a random CLI secret, and the OAuth2
    // token as JSON (src/pkg/oidc/secret.go unmarshals it).
    col("oidc_user", "secret", Plain::Text, 0),
    col("oidc_user", "token", Plain::Json, 0),
    // src/pkg/config/db/db.go: PasswordType items of user scope (metadatalist.go):
    // ldap_search_password and oidc_client_secret.
    col("properties", "v", Plain::Text, 0),
    // src/pkg/scan/scanner/manager.go, src/pkg/p2p/preheat/instance/manager.go (2.15.2);
    // auth_data is the JSON of the instance's AuthInfo.
    col("scanner_registration", "access_cred", Plain::Text, 180),
    col("p2p_preheat_instance", "auth_data", Plain::Json, 180),
];

const fn col(table: &'static str, column: &'static str, plain: Plain, since: i64) -> Encrypted {
    Encrypted {
        table,
        column,
        plain,
        since,
    }
}

/// How a public table's column is read at `schema`: `Some(kind)` when Harbor encrypts it
/// there. Unknown versions (and none) take every column Harbor ever encrypted.
pub fn encrypted_column(schema: Option<i64>, table: &str, column: &str) -> Option<Plain> {
    ENCRYPTED
        .iter()
        .find(|e| e.table == table && e.column == column && schema.is_none_or(|v| v >= e.since))
        .map(|e| e.plain)
}

/// Counts for one column.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ColumnCount {
    /// `table.column` (`schema.table.column` outside `public`).
    pub column: String,
    /// Harbor encrypts this column; `false`: an `<enc-v1>` value where none was expected.
    pub known: bool,
    pub opened: u64,
    pub failed: u64,
    /// Values that are an IV and nothing else (an empty secret): any key opens them.
    pub empty: u64,
    /// Not base64 or too short: no key opens them.
    pub malformed: u64,
}

impl ColumnCount {
    fn add(&mut self, o: Opened) {
        match o {
            Opened::Yes => self.opened += 1,
            Opened::No => self.failed += 1,
            Opened::Empty => self.empty += 1,
            Opened::Malformed => self.malformed += 1,
        }
    }

    fn merge(&mut self, other: &ColumnCount) {
        self.opened += other.opened;
        self.failed += other.failed;
        self.empty += other.empty;
        self.malformed += other.malformed;
    }

    /// Values the key does not open.
    pub fn not_opened(&self) -> u64 {
        self.failed + self.malformed
    }
}

/// The key check of one database: which key, and per column what it opened.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KeyReport {
    /// Where the key came from (a path in the snapshot's configuration part, or a
    /// `--config` file); never the key.
    pub key_file: String,
    pub columns: Vec<ColumnCount>,
}

impl KeyReport {
    pub fn new(key_file: impl Into<String>) -> Self {
        KeyReport {
            key_file: key_file.into(),
            columns: Vec::new(),
        }
    }

    /// Fold one table's counts in, keeping columns sorted by name.
    pub fn merge(&mut self, counts: Vec<ColumnCount>) {
        let mut all: BTreeMap<String, ColumnCount> = std::mem::take(&mut self.columns)
            .into_iter()
            .map(|c| (c.column.clone(), c))
            .collect();
        for c in counts {
            match all.get_mut(&c.column) {
                Some(have) => have.merge(&c),
                None => {
                    all.insert(c.column.clone(), c);
                }
            }
        }
        self.columns = all.into_values().collect();
    }

    pub fn values(&self) -> u64 {
        self.columns
            .iter()
            .map(|c| c.opened + c.failed + c.empty + c.malformed)
            .sum()
    }

    /// One line per column the key does not open.
    pub fn failures(&self, whose: &str) -> Vec<String> {
        self.columns
            .iter()
            .filter(|c| c.not_opened() > 0)
            .map(|c| {
                let malformed = match c.malformed {
                    0 => String::new(),
                    n => format!(", {n} of them not even well-formed"),
                };
                let unknown = match c.known {
                    true => "",
                    false => " (a column Harbor is not known to encrypt)",
                };
                format!(
                    "the secretKey in {whose} ({}) does not decrypt {} of {} values in {}{unknown}{malformed}: restored with it, Harbor cannot use these credentials; back up the key that belongs to this database",
                    self.key_file,
                    c.not_opened(),
                    c.opened + c.failed + c.empty + c.malformed,
                    c.column
                )
            })
            .collect()
    }

    /// `table.column: N opened, M did not` for every column with values.
    pub fn summary(&self) -> Vec<String> {
        self.columns
            .iter()
            .map(|c| {
                let mut s = format!(
                    "{}: {} opened, {} did not",
                    c.column,
                    c.opened,
                    c.not_opened()
                );
                if c.empty > 0 {
                    s += &format!(", {} empty", c.empty);
                }
                if !c.known {
                    s += " (not a column Harbor is known to encrypt)";
                }
                s
            })
            .collect()
    }
}

/// A key to check a database with, and where it came from.
#[derive(Clone, Debug)]
pub struct KeyCheck {
    source: String,
    key: Arc<HarborKey>,
}

impl KeyCheck {
    pub fn new(source: impl Into<String>, key: HarborKey) -> Self {
        KeyCheck {
            source: source.into(),
            key: Arc::new(key),
        }
    }

    /// A scanner for one table of a database at Harbor schema `schema`.
    pub fn scan(&self, table: &TableEntry, schema: Option<i64>) -> TableScan {
        TableScan::new(self.key.clone(), table, schema)
    }

    /// The report over every table's counts.
    pub fn report(&self, tables: impl IntoIterator<Item = Vec<ColumnCount>>) -> KeyReport {
        let mut r = KeyReport::new(&self.source);
        for t in tables {
            r.merge(t);
        }
        r
    }
}

/// Scans one table's COPY text (any split points) for `<enc-v1>` values in every column,
/// and checks each against the key. Fields without the header cost one substring search
/// per batch.
pub struct TableScan {
    key: Arc<HarborKey>,
    /// Per COPY column: its counts and how Harbor encrypts it (`None`: not known to).
    columns: Vec<(ColumnCount, Option<Plain>)>,
    /// The partial row at the end of the last piece.
    pending: Vec<u8>,
    finder: memchr::memmem::Finder<'static>,
    table: String,
}

impl TableScan {
    pub fn new(key: Arc<HarborKey>, table: &TableEntry, schema: Option<i64>) -> Self {
        let columns = table
            .columns
            .iter()
            .map(|c| {
                let known = match table.schema.as_str() {
                    "public" => encrypted_column(schema, &table.name, c),
                    _ => None,
                };
                let count = ColumnCount {
                    column: format!("{}.{c}", shown_table(table)),
                    known: known.is_some(),
                    ..Default::default()
                };
                (count, known)
            })
            .collect();
        TableScan {
            key,
            columns,
            pending: Vec::new(),
            finder: memchr::memmem::Finder::new(HEADER.as_bytes()),
            table: shown_table(table),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        let Some(last) = memchr::memrchr(b'\n', data) else {
            self.pending.extend_from_slice(data);
            return;
        };
        let (rows, rest) = data.split_at(last + 1);
        if self.pending.is_empty() {
            self.rows(rows);
        } else {
            let mut joined = std::mem::take(&mut self.pending);
            joined.extend_from_slice(rows);
            self.rows(&joined);
            joined.clear();
            self.pending = joined;
        }
        self.pending.extend_from_slice(rest);
    }

    /// Complete rows; skipped unless the header occurs somewhere in them.
    fn rows(&mut self, rows: &[u8]) {
        if self.finder.find(rows).is_none() {
            return;
        }
        for row in rows.split(|&b| b == b'\n') {
            if self.finder.find(row).is_some() {
                self.row(row);
            }
        }
    }

    fn row(&mut self, row: &[u8]) {
        for (i, field) in row.split(|&b| b == b'\t').enumerate() {
            let Some(value) = field.strip_prefix(HEADER.as_bytes()) else {
                continue;
            };
            if i >= self.columns.len() {
                // More fields than the column list: a table without one, or forged data.
                let column = format!("{}.column {}", self.table, i + 1);
                self.columns.push((
                    ColumnCount {
                        column,
                        ..Default::default()
                    },
                    None,
                ));
            }
            let (count, plain) = &mut self.columns[i];
            let outcome = match unescape(value) {
                Some(v) => self.key.opens(&v, plain.unwrap_or(Plain::Text)),
                None => Opened::Malformed,
            };
            count.add(outcome);
        }
    }

    /// Counts of the columns that held `<enc-v1>` values.
    pub fn finish(mut self) -> Vec<ColumnCount> {
        if !self.pending.is_empty() {
            let last = std::mem::take(&mut self.pending);
            self.rows(&last);
        }
        self.columns
            .into_iter()
            .map(|(c, _)| c)
            .filter(|c| c.opened + c.failed + c.empty + c.malformed > 0)
            .collect()
    }
}

fn shown_table(t: &TableEntry) -> String {
    match t.schema.as_str() {
        "public" => t.name.clone(),
        _ => t.display(),
    }
}

/// A COPY text field's bytes. Base64 needs no escapes, so a field with a backslash is
/// decoded only to be fair to an odd writer; `None` for a broken escape.
fn unescape(field: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    if !field.contains(&b'\\') {
        return Some(std::borrow::Cow::Borrowed(field));
    }
    let mut out = Vec::with_capacity(field.len());
    let mut it = field.iter().copied().peekable();
    while let Some(b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let c = it.next()?;
        out.push(match c {
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 11,
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match it.peek() {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            it.next();
                        }
                        _ => break,
                    }
                }
                v as u8
            }
            b'x' => {
                let mut v = 0u8;
                let mut digits = 0;
                while digits < 2 {
                    match it.peek().and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d as u8;
                            it.next();
                            digits += 1;
                        }
                        None => break,
                    }
                }
                if digits == 0 {
                    b'x'
                } else {
                    v
                }
            }
            other => other,
        });
    }
    Some(std::borrow::Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8; 16] = b"drydock-test-K16";

    /// Harbor's ReversibleEncrypt with a chosen IV.
    fn encrypt(key: &[u8; 16], iv: &[u8; 16], plain: &[u8]) -> String {
        let mut buf = plain.to_vec();
        cfb_mode::Encryptor::<Aes128>::new(key.into(), iv.into()).encrypt(&mut buf);
        let mut raw = iv.to_vec();
        raw.extend(buf);
        format!(
            "{HEADER}{}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    fn key() -> HarborKey {
        HarborKey::from_file_bytes(KEY).unwrap()
    }

    #[test]
    fn the_documented_vector() {
        // docs/OPERATIONS.md "The secretKey": the same vector, made with `openssl enc -aes-128-cfb`.
        let iv = *b"0123456789abcdef";
        let v = encrypt(KEY, &iv, b"Harbor12345");
        assert_eq!(v, "<enc-v1>MDEyMzQ1Njc4OWFiY2RlZnl2QdmIBphr3lXN");
        let body = v.strip_prefix(HEADER).unwrap().as_bytes();
        assert_eq!(key().opens(body, Plain::Text), Opened::Yes);
        assert_eq!(key().opens(body, Plain::Json), Opened::No);
        let other = HarborKey::from_file_bytes(b"another-16-bytes").unwrap();
        assert_eq!(other.opens(body, Plain::Text), Opened::No);
    }

    #[test]
    fn outcomes() {
        let iv = [7u8; 16];
        let json = encrypt(KEY, &iv, br#"{"access_token":"x","expiry":"2026"}"#);
        let k = key();
        let body = |s: &str| s.strip_prefix(HEADER).unwrap().as_bytes().to_vec();
        assert_eq!(k.opens(&body(&json), Plain::Json), Opened::Yes);
        let tabbed = encrypt(KEY, &iv, b"{\n\t\"type\": \"service_account\"\r\n}");
        assert_eq!(k.opens(&body(&tabbed), Plain::Json), Opened::Yes);
        let bell = encrypt(KEY, &iv, b"pass\x07word");
        assert_eq!(k.opens(&body(&bell), Plain::Text), Opened::No);
        assert_eq!(
            k.opens(b"YWJjZGVmZ2hpamtsbW5vcA==", Plain::Text),
            Opened::Empty
        );
        assert_eq!(k.opens(b"not base64!", Plain::Text), Opened::Malformed);
        assert_eq!(k.opens(b"YWJj", Plain::Text), Opened::Malformed);
        assert!(HarborKey::from_file_bytes(b"short").is_none());
        assert!(!format!("{k:?}").contains("drydock"));
    }

    #[test]
    fn a_wrong_key_fails_as_the_docs_say() {
        // 2 000 random 8-byte secrets under a wrong key: the docs give 0.0018 per value.
        let wrong = HarborKey::from_file_bytes(b"0123456789abcdef").unwrap();
        let mut passed = 0;
        for i in 0u32..2000 {
            let mut iv = [0u8; 16];
            iv[..4].copy_from_slice(&i.to_le_bytes());
            let v = encrypt(KEY, &iv, b"s3cr3t!!");
            let body = v.strip_prefix(HEADER).unwrap().as_bytes();
            passed += u32::from(wrong.opens(body, Plain::Text) == Opened::Yes);
        }
        assert!(passed < 20, "{passed} of 2000 passed");
    }

    fn entry(name: &str, columns: &[&str]) -> TableEntry {
        TableEntry {
            schema: "public".into(),
            name: name.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: 0,
            bytes: 0,
            checksum: String::new(),
        }
    }

    #[test]
    fn scans_copy_text_split_anywhere() {
        let good = encrypt(KEY, &[1; 16], b"hunter2hunter2");
        let bad = encrypt(b"another-16-bytes", &[2; 16], b"hunter2hunter2");
        let text = format!(
            "1\tdockerhub\t{good}\n2\tquay\t\\N\n3\tx\t{bad}\n4\t{good}\tplain\n5\ty\t{good}"
        );
        let table = entry("registry", &["id", "name", "access_secret"]);
        for split in [1, 7, 33, text.len()] {
            let mut scan = TableScan::new(Arc::new(key()), &table, Some(150));
            for piece in text.as_bytes().chunks(split) {
                scan.update(piece);
            }
            let counts = scan.finish();
            assert_eq!(counts.len(), 2, "{counts:?}");
            assert_eq!(counts[0].column, "registry.name");
            assert!(!counts[0].known);
            assert_eq!((counts[0].opened, counts[0].failed), (1, 0));
            assert_eq!(counts[1].column, "registry.access_secret");
            assert!(counts[1].known);
            assert_eq!((counts[1].opened, counts[1].failed), (2, 1));
        }
    }

    #[test]
    fn report_lines() {
        let mut r = KeyReport::new("/etc/core/key");
        let c = |col: &str, opened, failed| ColumnCount {
            column: col.into(),
            known: true,
            opened,
            failed,
            ..Default::default()
        };
        r.merge(vec![c("registry.access_secret", 1, 2)]);
        r.merge(vec![
            c("registry.access_secret", 0, 1),
            c("oidc_user.token", 3, 0),
        ]);
        assert_eq!(r.values(), 7);
        assert_eq!(
            r.summary(),
            vec![
                "oidc_user.token: 3 opened, 0 did not",
                "registry.access_secret: 1 opened, 3 did not"
            ]
        );
        let f = r.failures("this snapshot");
        assert_eq!(f.len(), 1);
        assert!(
            f[0].starts_with("the secretKey in this snapshot (/etc/core/key) does not decrypt 3 of 4 values in registry.access_secret"),
            "{}",
            f[0]
        );
    }

    #[test]
    fn columns_by_schema_version() {
        assert_eq!(
            encrypted_column(Some(111), "oidc_user", "token"),
            Some(Plain::Json)
        );
        assert_eq!(
            encrypted_column(Some(171), "scanner_registration", "access_cred"),
            None
        );
        assert_eq!(
            encrypted_column(Some(180), "p2p_preheat_instance", "auth_data"),
            Some(Plain::Json)
        );
        assert_eq!(
            encrypted_column(None, "scanner_registration", "access_cred"),
            Some(Plain::Text)
        );
        assert_eq!(encrypted_column(Some(180), "registry", "url"), None);
    }

    #[test]
    fn copy_escapes() {
        assert_eq!(&*unescape(b"ab\\\\c\\tq\\101\\x41").unwrap(), b"ab\\c\tqAA");
        assert!(unescape(b"trailing\\").is_none());
    }
}
