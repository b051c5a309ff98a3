//! A Velero BackupStorageLocation (`kubectl get bsl NAME -o yaml`) and its credentials.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::PLUGIN_DIR;
use crate::error::{Error, Result};
use crate::store::s3_settings::{
    checksum_algorithm, CustomerKey, Encryption, RequestSettings, TlsTrust,
};
use crate::store::S3Options;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessMode {
    ReadWrite,
    ReadOnly,
}

/// The parts of a BSL drydock uses.
#[derive(Clone, Debug)]
pub struct Bsl {
    pub name: String,
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
    pub access_mode: AccessMode,
    pub region: Option<String>,
    pub s3_url: Option<String>,
    pub path_style: bool,
    pub profile: Option<String>,
    pub credentials_file: Option<PathBuf>,
    /// PEM bytes of `objectStorage.caCert` (base64 in the YAML).
    pub ca_cert: Option<Vec<u8>>,
    /// `objectStorage.caCertRef`: the Secret key holding the CA bundle (preferred by Velero
    /// 1.17 over the deprecated inline `caCert`).
    pub ca_cert_ref: Option<SecretRef>,
    pub insecure_skip_tls_verify: bool,
    /// `spec.credential`: the Secret key holding this BSL's credentials file; Velero passes
    /// it to the plugin as `credentialsFile`, overriding the config key.
    pub credential: Option<SecretRef>,
    pub sse: Sse,
    /// `tagging`: URL-encoded `k=v&k2=v2`, checked as the plugin's CheckTags does.
    pub tagging: Option<String>,
    /// `checksumAlgorithm`: CRC32 unless given; `""` turns checksums off.
    pub checksum: Option<aws_sdk_s3::types::ChecksumAlgorithm>,
}

/// A key of a Kubernetes Secret (`name`, `key`), which drydock cannot read from the API: the
/// manifests mount Secret `name` at `<--velero-secrets>/<name>`, so the key is a file there.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SecretRef {
    pub name: String,
    pub key: String,
}

/// The server-side encryption keys of a BSL's config; at most one of the last three.
#[derive(Clone, Debug, Default)]
pub struct Sse {
    pub server_side_encryption: Option<String>,
    pub kms_key_id: Option<String>,
    pub customer_key_file: Option<PathBuf>,
    pub customer_key_secret: Option<SecretRef>,
}

#[derive(Deserialize)]
struct Object {
    kind: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: Option<Spec>,
    #[serde(default)]
    items: Vec<serde_yaml::Value>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    provider: String,
    object_storage: ObjectStorage,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    access_mode: Option<String>,
    #[serde(default)]
    credential: Option<SecretRef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectStorage {
    bucket: String,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    ca_cert: Option<String>,
    #[serde(default)]
    ca_cert_ref: Option<SecretRef>,
}

/// `config` keys of the Velero AWS plugin; anything else is refused, as the plugin does.
const AWS_KEYS: &[&str] = &[
    "region",
    "s3Url",
    "publicUrl",
    "s3ForcePathStyle",
    "insecureSkipTLSVerify",
    "profile",
    "serverSideEncryption",
    "kmsKeyId",
    "customerKeyEncryptionFile",
    "customerKeyEncryptionSecret",
    "signatureVersion",
    "credentialsFile",
    "enableSharedConfig",
    "tagging",
    "checksumAlgorithm",
];

/// A boolean config value as the AWS plugin reads it: Go's `strconv.ParseBool` (`1`, `t`,
/// `T`, `TRUE`, `true`, `True` and their false forms); absent is false, anything else is
/// refused naming the key, never silently read as false.
fn parse_bool(key: &str, v: Option<&String>) -> Result<bool> {
    match v.map(String::as_str) {
        None => Ok(false),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
        Some(other) => Err(Error::Usage(format!(
            "BSL config {key}: {other:?} is not a boolean (Velero takes 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)"
        ))),
    }
}

/// A config value as the plugin reads it: an empty string is the same as none.
fn get<'a>(c: &'a BTreeMap<String, String>, key: &str) -> Option<&'a String> {
    c.get(key).filter(|v| !v.is_empty())
}

/// Printable ASCII only: the value goes into a request header as it is.
fn header_safe(key: &str, v: &str) -> Result<()> {
    if v.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "BSL config {key}: {v:?} holds a control or non-ASCII character; URL-encode it"
        )))
    }
}

/// `s3Url` and `publicUrl` as the plugin checks them: a URL with scheme http or https.
fn check_url(key: &str, v: &str) -> Result<()> {
    match url::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        _ => Err(Error::Usage(format!(
            "BSL config {key}: {v:?} is not an http:// or https:// URL"
        ))),
    }
}

/// `tagging` as the plugin's CheckTags checks it: `k=v` pairs joined by `&` (a single tag
/// is refused, as the plugin refuses it), at most ten, keys up to 128 characters and values
/// up to 248.
fn check_tags(tags: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Usage(format!("BSL config tagging {tags:?}: {why}")));
    header_safe("tagging", tags)?;
    let pairs: Vec<&str> = tags.split('&').collect();
    if pairs.len() == 1 {
        return bad("tags are not separated with an & (the Velero AWS plugin refuses a single tag: add a second)");
    }
    if pairs.len() > 10 {
        return bad("S3 allows at most ten tags per object");
    }
    for pair in pairs {
        let kv: Vec<&str> = pair.split('=').collect();
        match kv.as_slice() {
            [k, _] if k.chars().count() > 128 => {
                return bad("a tag key is longer than 128 characters")
            }
            [_, v] if v.chars().count() > 248 => {
                return bad("a tag value is longer than 248 characters")
            }
            [_, _] => {}
            _ => return bad(&format!("{pair:?} is not one key=value")),
        }
    }
    Ok(())
}

/// A Secret key reference, checked before it becomes a path: a Secret name is a DNS
/// subdomain and a key `[-._a-zA-Z0-9]+`, so neither can climb out of the mount directory.
fn check_secret_ref(field: &str, r: &SecretRef) -> Result<()> {
    let name_ok = (1..=253).contains(&r.name.len())
        && r.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && r.name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && r.name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let key_ok = (1..=253).contains(&r.key.len())
        && r.key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && r.key != "."
        && r.key != "..";
    if name_ok && key_ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "BSL {field}: Secret {:?} key {:?} is not a valid Secret name and key",
            r.name, r.key
        )))
    }
}

/// The encryption keys of the config, with the plugin's rules: at most one of kmsKeyId,
/// customerKeyEncryptionFile and customerKeyEncryptionSecret (`secretName/key`).
fn sse_of(c: &BTreeMap<String, String>) -> Result<Sse> {
    const ONE_OF: [&str; 3] = [
        "kmsKeyId",
        "customerKeyEncryptionFile",
        "customerKeyEncryptionSecret",
    ];
    let given: Vec<&str> = ONE_OF.into_iter().filter(|k| get(c, k).is_some()).collect();
    if given.len() > 1 {
        return Err(Error::Usage(format!(
            "BSL config {}: you can only use one of kmsKeyId, customerKeyEncryptionFile or customerKeyEncryptionSecret",
            given.join(" and ")
        )));
    }
    let server_side_encryption = get(c, "serverSideEncryption").cloned();
    if let Some(v) = &server_side_encryption {
        if !matches!(v.as_str(), "AES256" | "aws:kms" | "aws:kms:dsse") {
            return Err(Error::Usage(format!(
                "BSL config serverSideEncryption: {v:?} is not one S3 knows (AES256, aws:kms, aws:kms:dsse)"
            )));
        }
    }
    let kms_key_id = get(c, "kmsKeyId").cloned();
    if let Some(id) = &kms_key_id {
        header_safe("kmsKeyId", id)?;
    }
    let customer_key_secret = match get(c, "customerKeyEncryptionSecret") {
        None => None,
        Some(v) => {
            let Some((name, key)) = v.split_once('/').filter(|(_, k)| !k.contains('/')) else {
                return Err(Error::Usage(format!(
                    "BSL config customerKeyEncryptionSecret: {v:?} is not secretName/key"
                )));
            };
            let r = SecretRef {
                name: name.into(),
                key: key.into(),
            };
            check_secret_ref("config.customerKeyEncryptionSecret", &r)?;
            Some(r)
        }
    };
    Ok(Sse {
        server_side_encryption,
        kms_key_id,
        customer_key_file: get(c, "customerKeyEncryptionFile").map(PathBuf::from),
        customer_key_secret,
    })
}

/// Where Secret key `r` (named by the BSL field `field`) is mounted; it must be there.
fn mounted(field: &str, r: &SecretRef, secrets: &Path) -> Result<PathBuf> {
    let path = secrets.join(&r.name).join(&r.key);
    if path.is_file() {
        return Ok(path);
    }
    Err(Error::Usage(format!(
        "BSL {field} names Secret {:?} key {:?}, which is not mounted at {}: mount the Secret at {} (deploy/kustomize/components/velero-bsl) or point --velero-secrets at where it is",
        r.name,
        r.key,
        path.display(),
        secrets.join(&r.name).display()
    )))
}

/// At most `limit` bytes of `path` (more is an error), wiped when dropped.
fn read_bounded(what: &str, path: &Path, limit: u64) -> Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut out))
        .map_err(|e| Error::Usage(format!("{what} {}: {e}", path.display())))?;
    if out.len() as u64 > limit {
        return Err(Error::Usage(format!(
            "{what} {}: larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(out)
}

/// A 32-byte SSE-C key from raw bytes; `what` names where they came from.
fn customer_key(what: &str, raw: &[u8]) -> Result<CustomerKey> {
    let key: &[u8; 32] = raw.try_into().map_err(|_| {
        Error::Usage(format!(
            "{what}: the SSE-C key must be exactly 32 bytes, not {}",
            raw.len()
        ))
    })?;
    Ok(CustomerKey::new(key))
}

impl Bsl {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Usage(format!("--velero-bsl {}: {e}", path.display())))?;
        Bsl::parse(&text).map_err(|e| match e {
            Error::Usage(m) => Error::Usage(format!("--velero-bsl {}: {m}", path.display())),
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self> {
        let mut obj: Object = serde_yaml::from_str(text)
            .map_err(|e| Error::Usage(format!("not a BackupStorageLocation: {e}")))?;
        if obj.kind.as_deref() == Some("List") {
            if obj.items.len() != 1 {
                return Err(Error::Usage(format!(
                    "a List of {} objects; give one BackupStorageLocation (kubectl get bsl NAME -o yaml)",
                    obj.items.len()
                )));
            }
            obj = serde_yaml::from_value(obj.items.remove(0))
                .map_err(|e| Error::Usage(format!("not a BackupStorageLocation: {e}")))?;
        }
        if obj.kind.as_deref() != Some("BackupStorageLocation") {
            return Err(Error::Usage(format!(
                "kind {:?} is not BackupStorageLocation",
                obj.kind.unwrap_or_default()
            )));
        }
        let spec = obj
            .spec
            .ok_or_else(|| Error::Usage("the BackupStorageLocation has no spec".into()))?;
        let provider = spec.provider.trim_start_matches("velero.io/");
        if provider != "aws" {
            return Err(Error::Usage(format!(
                "provider {:?}: drydock speaks S3, i.e. the Velero AWS plugin's provider \"aws\" (which also covers MinIO, Ceph and other S3 servers)",
                spec.provider
            )));
        }
        if let Some(unknown) = spec.config.keys().find(|k| !AWS_KEYS.contains(&k.as_str())) {
            return Err(Error::Usage(format!(
                "config key {unknown:?} is not one the Velero AWS plugin accepts ({})",
                AWS_KEYS.join(", ")
            )));
        }
        let bucket = spec.object_storage.bucket;
        if bucket.is_empty() || bucket.contains('/') {
            return Err(Error::Usage(format!(
                "objectStorage.bucket {bucket:?} must be a bucket name without '/'"
            )));
        }
        let access_mode = match spec.access_mode.as_deref() {
            None | Some("ReadWrite") => AccessMode::ReadWrite,
            Some("ReadOnly") => AccessMode::ReadOnly,
            Some(other) => {
                return Err(Error::Usage(format!(
                    "accessMode {other:?}: want ReadWrite or ReadOnly"
                )))
            }
        };
        let ca_cert = match spec.object_storage.ca_cert {
            Some(b64) if !b64.trim().is_empty() => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.split_whitespace().collect::<String>())
                    .map_err(|e| {
                        Error::Usage(format!("objectStorage.caCert is not base64: {e}"))
                    })?,
            ),
            _ => None,
        };
        if ca_cert.is_some() && spec.object_storage.ca_cert_ref.is_some() {
            return Err(Error::Usage(
                "objectStorage has both caCert and caCertRef, which Velero refuses; keep caCertRef"
                    .into(),
            ));
        }
        if let Some(r) = &spec.object_storage.ca_cert_ref {
            check_secret_ref("objectStorage.caCertRef", r)?;
        }
        if let Some(r) = &spec.credential {
            check_secret_ref("spec.credential", r)?;
        }
        let c = &spec.config;
        for key in ["s3Url", "publicUrl"] {
            if let Some(v) = get(c, key) {
                check_url(key, v)?;
            }
        }
        let tagging = get(c, "tagging").cloned();
        if let Some(t) = &tagging {
            check_tags(t)?;
        }
        let checksum = match c.get("checksumAlgorithm") {
            None => Some(aws_sdk_s3::types::ChecksumAlgorithm::Crc32),
            Some(name) => checksum_algorithm(name).ok_or_else(|| {
                Error::Usage(format!(
                    "BSL config checksumAlgorithm: {name:?} is not one the Velero AWS plugin takes (CRC32, CRC32C, SHA1, SHA256, or \"\" for none)"
                ))
            })?,
        };
        Ok(Bsl {
            name: obj.metadata.name,
            bucket,
            prefix: spec
                .object_storage
                .prefix
                .unwrap_or_default()
                .trim_matches('/')
                .to_string(),
            access_mode,
            region: get(c, "region").cloned(),
            s3_url: get(c, "s3Url").cloned(),
            path_style: parse_bool("s3ForcePathStyle", get(c, "s3ForcePathStyle"))?,
            profile: get(c, "profile").cloned(),
            credentials_file: get(c, "credentialsFile").map(PathBuf::from),
            ca_cert,
            ca_cert_ref: spec.object_storage.ca_cert_ref,
            insecure_skip_tls_verify: parse_bool(
                "insecureSkipTLSVerify",
                get(c, "insecureSkipTLSVerify"),
            )?,
            credential: spec.credential,
            sse: sse_of(c)?,
            tagging,
            checksum,
        })
    }

    /// `s3://bucket/<prefix>/plugins/drydock`.
    pub fn repo_url(&self) -> String {
        self.url_of(PLUGIN_DIR)
    }

    /// `s3://bucket/<prefix>`: Velero's own folders.
    pub fn velero_url(&self) -> String {
        self.url_of("")
    }

    fn url_of(&self, sub: &str) -> String {
        let parts: Vec<&str> = [self.prefix.as_str(), sub]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        format!("s3://{}/{}", self.bucket, parts.join("/"))
    }

    /// S3 settings: the BSL's, with the Secrets it names read under `secrets`, and the
    /// credentials file given on the command line (Velero mounts it at /credentials/cloud)
    /// unless the BSL names its own (`spec.credential` first, as Velero passes that to the
    /// plugin in place of `credentialsFile`).
    pub fn s3_options(&self, credentials: Option<&Path>, secrets: &Path) -> Result<S3Options> {
        let credentials_file = match &self.credential {
            Some(r) => Some(mounted("spec.credential", r, secrets)?),
            None => self
                .credentials_file
                .clone()
                .or_else(|| credentials.map(Path::to_path_buf)),
        };
        let ca_pem = match &self.ca_cert_ref {
            Some(r) => {
                let path = mounted("objectStorage.caCertRef", r, secrets)?;
                Some(read_bounded("objectStorage.caCertRef", &path, 1 << 20)?.to_vec())
            }
            None => self.ca_cert.clone(),
        };
        Ok(S3Options {
            endpoint: self.s3_url.clone(),
            region: self.region.clone(),
            path_style: self.path_style,
            credentials_file,
            profile: self.profile.clone(),
            tls: TlsTrust {
                ca_pem,
                insecure_skip_verify: self.insecure_skip_tls_verify,
            },
            requests: RequestSettings {
                encryption: self.encryption(secrets)?,
                tagging: self.tagging.clone(),
                checksum: self.checksum.clone(),
            },
            discover_region: self.region.is_none() && self.s3_url.is_none(),
        })
    }

    /// The plugin's order: a KMS key id means aws:kms, then SSE-C, then serverSideEncryption.
    fn encryption(&self, secrets: &Path) -> Result<Option<Encryption>> {
        let sse = &self.sse;
        if let Some(id) = &sse.kms_key_id {
            return Ok(Some(Encryption::Server {
                algorithm: "aws:kms".into(),
                kms_key_id: Some(id.clone()),
            }));
        }
        if let Some(path) = &sse.customer_key_file {
            // The plugin reads the first 32 bytes of the file (one trailing newline after a
            // 32-byte key is ignored the same way); the same bytes, or Velero's objects
            // would not open.
            let what = "BSL config customerKeyEncryptionFile";
            let mut raw = Zeroizing::new(Vec::new());
            std::fs::File::open(path)
                .and_then(|f| f.take(32).read_to_end(&mut raw))
                .map_err(|e| Error::Usage(format!("{what} {}: {e}", path.display())))?;
            return customer_key(&format!("{what} {}", path.display()), &raw)
                .map(|k| Some(Encryption::Customer(k)));
        }
        if let Some(r) = &sse.customer_key_secret {
            let field = "config.customerKeyEncryptionSecret";
            let path = mounted(field, r, secrets)?;
            let raw = read_bounded(&format!("BSL {field}"), &path, 32)?;
            return customer_key(&format!("BSL {field} {}", path.display()), &raw)
                .map(|k| Some(Encryption::Customer(k)));
        }
        Ok(sse
            .server_side_encryption
            .clone()
            .map(|algorithm| Encryption::Server {
                algorithm,
                kms_key_id: None,
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_read_as_go_parses_them() {
        let v = |s: &str| Some(s.to_string());
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert!(parse_bool("k", v(t).as_ref()).unwrap(), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert!(!parse_bool("k", v(f).as_ref()).unwrap(), "{f}");
        }
        assert!(!parse_bool("k", None).unwrap());
        let e = parse_bool("s3ForcePathStyle", v("yes").as_ref()).unwrap_err();
        assert!(e.to_string().contains("s3ForcePathStyle"), "{e}");
    }

    const BSL: &str = r#"
apiVersion: velero.io/v1
kind: BackupStorageLocation
metadata:
  name: default
  namespace: velero
spec:
  provider: aws
  objectStorage:
    bucket: velero-backups
    prefix: cluster-a/
    caCert: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
  config:
    region: eu-central-1
    s3Url: http://minio.velero:9000
    s3ForcePathStyle: "true"
    profile: backup
  accessMode: ReadWrite
status:
  phase: Available
"#;

    #[test]
    fn parses_a_bsl() {
        let b = Bsl::parse(BSL).unwrap();
        assert_eq!(
            (b.bucket.as_str(), b.prefix.as_str()),
            ("velero-backups", "cluster-a")
        );
        assert_eq!(
            b.repo_url(),
            "s3://velero-backups/cluster-a/plugins/drydock"
        );
        assert_eq!(b.velero_url(), "s3://velero-backups/cluster-a");
        assert!(b.path_style);
        assert_eq!(b.profile.as_deref(), Some("backup"));
        assert_eq!(b.access_mode, AccessMode::ReadWrite);
        assert!(b
            .ca_cert
            .unwrap()
            .starts_with(b"-----BEGIN CERTIFICATE-----"));
        let o = Bsl::parse(BSL)
            .unwrap()
            .s3_options(
                Some(Path::new("/credentials/cloud")),
                Path::new("/nonexistent"),
            )
            .unwrap();
        assert_eq!(
            o.credentials_file.unwrap(),
            PathBuf::from("/credentials/cloud")
        );
        assert_eq!(o.endpoint.as_deref(), Some("http://minio.velero:9000"));
    }

    #[test]
    fn read_only_lists_and_refusals() {
        let ro = BSL.replace("accessMode: ReadWrite", "accessMode: ReadOnly");
        assert_eq!(Bsl::parse(&ro).unwrap().access_mode, AccessMode::ReadOnly);
        let list = format!(
            "apiVersion: v1\nkind: List\nitems:\n{}",
            BSL.lines()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
                .replacen("  apiVersion", "- apiVersion", 1)
        );
        assert_eq!(Bsl::parse(&list).unwrap().bucket, "velero-backups");
        assert!(Bsl::parse(&BSL.replace("profile: backup", "profle: backup")).is_err());
        assert!(Bsl::parse(&BSL.replace("provider: aws", "provider: gcp")).is_err());
        assert!(Bsl::parse(&BSL.replace("bucket: velero-backups", "bucket: a/b")).is_err());
        assert!(Bsl::parse("kind: Deployment").is_err());
        let no_prefix = BSL.replace("    prefix: cluster-a/\n", "");
        assert_eq!(
            Bsl::parse(&no_prefix).unwrap().repo_url(),
            "s3://velero-backups/plugins/drydock"
        );
    }
}
