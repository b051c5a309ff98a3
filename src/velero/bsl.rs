//! A Velero BackupStorageLocation (`kubectl get bsl NAME -o yaml`) and its credentials.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use super::PLUGIN_DIR;
use crate::error::{Error, Result};
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
    pub insecure_skip_tls_verify: bool,
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
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectStorage {
    bucket: String,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    ca_cert: Option<String>,
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
        let c = &spec.config;
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
            region: c.get("region").cloned(),
            s3_url: c.get("s3Url").cloned(),
            path_style: parse_bool("s3ForcePathStyle", c.get("s3ForcePathStyle"))?,
            profile: c.get("profile").cloned(),
            credentials_file: c.get("credentialsFile").map(PathBuf::from),
            ca_cert,
            insecure_skip_tls_verify: parse_bool(
                "insecureSkipTLSVerify",
                c.get("insecureSkipTLSVerify"),
            )?,
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

    /// S3 settings: the BSL's, with the credentials file given on the command line (Velero
    /// mounts it at /credentials/cloud) unless the BSL names its own.
    pub fn s3_options(&self, credentials: Option<&Path>) -> S3Options {
        S3Options {
            endpoint: self.s3_url.clone(),
            region: self.region.clone(),
            path_style: self.path_style,
            credentials_file: self
                .credentials_file
                .clone()
                .or_else(|| credentials.map(Path::to_path_buf)),
            profile: self.profile.clone(),
        }
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
            .s3_options(Some(Path::new("/credentials/cloud")));
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
