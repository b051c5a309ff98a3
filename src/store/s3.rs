//! A repository in an S3 bucket (AWS, MinIO, Ceph, SeaweedFS, R2, moto…).
//!
//! Requests go through the SDK's standard retry strategy (exponential backoff with jitter on
//! throttling, 5xx, timeouts and connection errors); reading a body is retried here too,
//! because a connection can break after the headers arrived (a streamed read resumes with a
//! range request where it stopped).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockMode,
    ObjectLockRetention, ObjectLockRetentionMode,
};
use aws_sdk_s3::Client;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use sha2::Digest as _;

use super::{
    ceil_second, BucketLock, ByteReader, ClassedObject, ColdState, LockMode, ObjectInfo, PutMode,
    PutOutcome, Retention, S3Options, StorageClass, Store, Thaw, ThawTier, WriteRetention,
};
use crate::error::{Error, Result};
use futures::stream::BoxStream;
use futures::StreamExt;

/// Objects larger than this go up in parts. Above the largest pack (16 MiB target plus
/// one 8 MiB chunk and its header), so a pack is one PUT, not create + 3 parts + complete.
pub const MULTIPART_THRESHOLD: usize = 32 * 1024 * 1024;
pub const PART_SIZE: usize = 8 * 1024 * 1024;
const BODY_READ_ATTEMPTS: u32 = 4;
/// How far S3's clock and this host's can differ while requests still succeed: S3 refuses a
/// request signed more than 15 minutes off (`RequestTimeTooSkewed`).
const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(15);

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
    endpoint: String,
    /// The retention every write carries (the "locked mode" when set), shared by clones.
    write_retention: Arc<RwLock<Option<WriteRetention>>>,
    /// Entries per ListObjectVersions request; `None`: the server's default (1000 on AWS).
    version_page: Option<i32>,
}

/// The lock one write carries: decided once per object, so every request of a multipart
/// upload agrees.
#[derive(Clone, Copy, Debug)]
struct WriteLock {
    mode: LockMode,
    until: DateTime<Utc>,
}

/// One entry of a version listing.
#[derive(Clone, Debug)]
struct Version {
    /// The full key (with the store's prefix).
    key: String,
    id: String,
    delete_marker: bool,
    size: u64,
    modified: Option<DateTime<Utc>>,
    latest: bool,
}

impl Version {
    /// Whether this version is newer than `other` by the store's clock; the server's
    /// `IsLatest` breaks a tie (versions written in the same millisecond).
    fn newer_than(&self, other: &Version) -> bool {
        (self.modified, self.latest) > (other.modified, other.latest)
    }
}

/// The newest version that is not a delete marker.
fn newest_live<'a>(versions: impl IntoIterator<Item = &'a Version>) -> Option<&'a Version> {
    versions
        .into_iter()
        .filter(|v| !v.delete_marker)
        .fold(None, |best: Option<&Version>, v| match best {
            Some(b) if !v.newer_than(b) => Some(b),
            _ => Some(v),
        })
}

/// What S3 says about one object version's lock.
#[derive(Clone, Debug, Default)]
struct LockState {
    /// The version this is about, when the server named it.
    version: Option<String>,
    mode: Option<LockMode>,
    until: Option<DateTime<Utc>>,
    legal_hold: bool,
}

fn to_smithy(t: DateTime<Utc>) -> aws_smithy_types::DateTime {
    aws_smithy_types::DateTime::from_secs(ceil_second(t).timestamp())
}

fn from_smithy(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// The `x-amz-checksum-sha256` value of `data`: S3 refuses an Object Lock write without a
/// checksum (Content-MD5 or an `x-amz-checksum-*` header).
fn sha256_base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(data))
}

fn status_of<E, R: HttpStatus>(err: &SdkError<E, R>) -> Option<u16> {
    err.raw_response().map(|r| r.status_code())
}

fn max_attempts() -> u32 {
    std::env::var("DRYDOCK_S3_MAX_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(8)
}

impl S3Store {
    pub async fn connect(bucket: &str, prefix: &str, opts: &S3Options) -> Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(max_attempts())
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(20)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(region) = &opts.region {
            loader = loader.region(Region::new(region.clone()));
        } else if opts.endpoint.is_some() {
            // Not AWS: the environment or profile may name a region, but asking the EC2
            // instance metadata service (the SDK's last resort) only times out with warnings.
            use aws_config::meta::region::RegionProviderChain;
            let mut profile = aws_config::profile::ProfileFileRegionProvider::builder();
            if let Some(name) = &opts.profile {
                profile = profile.profile_name(name);
            }
            loader = loader.region(
                RegionProviderChain::first_try(
                    aws_config::environment::EnvironmentVariableRegionProvider::new(),
                )
                .or_else(profile.build())
                .or_else(Region::new("us-east-1")),
            );
        }
        if !opts.tls.is_default() {
            loader = loader.http_client(super::s3_settings::TlsClient::new(&opts.tls)?);
        }
        if opts.credentials_file.is_some() || opts.profile.is_some() {
            use aws_runtime::env_config::file::{
                EnvConfigFileKind as ProfileFileKind, EnvConfigFiles as ProfileFiles,
            };
            let mut files = ProfileFiles::builder().include_default_config_file(true);
            files = match &opts.credentials_file {
                Some(path) => {
                    if !path.is_file() {
                        return Err(Error::Usage(format!(
                            "credentials file {} does not exist",
                            path.display()
                        )));
                    }
                    // Read as both the shared credentials and the shared config file, as
                    // Velero does: `[name]` and `[profile name]` sections both work.
                    files
                        .include_default_credentials_file(false)
                        .include_default_config_file(false)
                        .with_file(ProfileFileKind::Credentials, path)
                        .with_file(ProfileFileKind::Config, path)
                }
                None => files.include_default_credentials_file(true),
            };
            let provider = aws_config::profile::ProfileFileCredentialsProvider::builder()
                .profile_files(files.build())
                .profile_name(opts.profile.clone().unwrap_or_else(|| "default".into()))
                .build();
            loader = loader.credentials_provider(provider);
        }
        let shared = loader.load().await;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(opts.path_style)
            // Many S3-compatible servers reject the newer default checksums.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if shared.region().is_none() {
            conf = conf.region(Region::new("us-east-1"));
        }
        if !opts.requests.is_empty() {
            conf = conf.interceptor(super::s3_settings::ApplySettings(Arc::new(
                opts.requests.clone(),
            )));
        }
        if opts.requests.checksum.is_some() {
            // The checksum the settings name goes with every PutObject and UploadPart.
            conf = conf.request_checksum_calculation(RequestChecksumCalculation::WhenSupported);
        }
        if opts.discover_region && opts.region.is_none() && opts.endpoint.is_none() {
            let region = bucket_region(&conf, bucket).await?;
            conf = conf.region(Region::new(region));
        }
        if let Some(endpoint) = &opts.endpoint {
            let url = url::Url::parse(endpoint)
                .map_err(|e| Error::Usage(format!("invalid --s3-endpoint {endpoint:?}: {e}")))?;
            if crate::net::is_cleartext_remote(&url) {
                // Not refused: in-cluster MinIO is often plain http. Repository data is
                // encrypted, but listings, sizes and registry storage are not.
                tracing::warn!(
                    endpoint = endpoint.as_str(),
                    "S3 endpoint {endpoint} is plain http:// to another host: object names, sizes and unencrypted data (registry storage) cross the network in the clear; use https://"
                );
            }
            conf = conf.endpoint_url(endpoint);
        }
        conf = conf.interceptor(StorageClassHeader);
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok(S3Store {
            client: Client::from_conf(conf.build()),
            bucket: bucket.into(),
            prefix,
            endpoint: opts.endpoint.clone().unwrap_or_else(|| "AWS".into()),
            write_retention: Arc::new(RwLock::new(None)),
            version_page: None,
        })
    }

    /// List object versions `n` at a time (tests: to see pagination with a few objects).
    #[doc(hidden)]
    pub fn with_version_page_size(mut self, n: i32) -> Self {
        self.version_page = Some(n.max(1));
        self
    }

    /// A HeadObject request for `key`, to send or to add a version to.
    fn head(
        &self,
        key: &str,
    ) -> aws_sdk_s3::operation::head_object::builders::HeadObjectFluentBuilder {
        self.client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn write_retention(&self) -> Option<WriteRetention> {
        *self
            .write_retention
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether writes are locked: then deletes remove every version and reads see past
    /// delete markers.
    fn locked(&self) -> bool {
        self.write_retention().is_some()
    }

    /// The lock a write starting now carries.
    fn write_lock(&self) -> Option<WriteLock> {
        self.write_retention().map(|w| WriteLock {
            mode: w.mode,
            until: w.until_from_now(),
        })
    }

    /// An answer from the server that lacks what it must hold.
    fn malformed(&self, op: &str, key: &str, what: &str) -> Error {
        Error::Store(format!(
            "{op} s3://{}/{} failed: the S3 server's answer is malformed: {what}",
            self.bucket,
            self.full_key(key)
        ))
    }

    /// The current objects under `prefix` (ListObjectsV2, every page), each with its key
    /// relative to the store's prefix.
    async fn list_current(&self, prefix: &str) -> Result<Vec<(String, aws_sdk_s3::types::Object)>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(prefix))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("list", prefix, e))?;
            for obj in page.contents() {
                if let Some(rel) = obj.key().and_then(|k| k.strip_prefix(&self.prefix)) {
                    out.push((rel.to_string(), obj.clone()));
                }
            }
        }
        Ok(out)
    }

    /// A storage class as S3 names it (absent: STANDARD, as S3 leaves it out then).
    fn class_named(&self, name: Option<&str>, key: &str) -> Result<StorageClass> {
        match name {
            None | Some("") => Ok(StorageClass::standard()),
            Some(n) => n.parse().map_err(|_| {
                self.malformed(
                    "read the storage class of",
                    key,
                    "a storage class name that is not one",
                )
            }),
        }
    }

    /// Turn an SDK error into a one-line message naming the object and what to do.
    fn error<E, R>(&self, op: &str, key: &str, err: SdkError<E, R>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + HttpStatus,
    {
        let status = err.raw_response().map(|r| r.status_code());
        let code = err.code().unwrap_or_default().to_string();
        let target = format!("s3://{}/{}", self.bucket, self.full_key(key));
        match (&err, status, code.as_str()) {
            (_, _, "NoSuchKey") | (_, Some(404), "") | (_, Some(404), "NotFound") => {
                Error::NotFound(target)
            }
            (_, _, "InvalidObjectState") => Error::Cold(format!(
                "{op} {target}: the object is in an archival storage class and not thawed (InvalidObjectState)"
            )),
            (_, _, "NoSuchBucket") => Error::Usage(format!(
                "bucket {:?} does not exist at {}; create it or fix --repo",
                self.bucket, self.endpoint
            )),
            (_, Some(403), _) | (_, _, "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
                Error::Key(format!(
                    "{op} {target}: access denied ({code}); check the S3 credentials and bucket policy"
                ))
            }
            (SdkError::DispatchFailure(_), _, _) if error_chain(&err).contains("credential") => Error::Key(format!(
                "no usable S3 credentials for {target}: {}; check the credentials file, its profile, or AWS_* variables",
                error_chain(&err)
            )),
            (SdkError::DispatchFailure(_), _, _) if connection_broke(&error_chain(&err)) => Error::Store(format!(
                "the connection to the S3 endpoint {} broke ({op} {target}), {} attempts: {}; check the network and the server",
                self.endpoint,
                max_attempts(),
                error_chain(&err)
            )),
            (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_), _, _) => Error::Store(format!(
                "cannot reach the S3 endpoint {} ({op} {target}): {}; check --s3-endpoint and the network",
                self.endpoint,
                error_chain(&err)
            )),
            // What the server said, not the SDK's debug dump of it.
            (SdkError::ServiceError(_), Some(status), code) if !code.is_empty() => {
                let message = err.message().map(|m| format!(" ({m})")).unwrap_or_default();
                let tries = if status >= 500 || code == "SlowDown" {
                    format!(", {} attempts", max_attempts())
                } else {
                    String::new()
                };
                Error::Store(format!(
                    "{op} {target} failed: the S3 server answered HTTP {status} {code}{message}{tries}"
                ))
            }
            _ => Error::Store(format!("{op} {target} failed: {}", error_chain(&err))),
        }
    }

    async fn put_multipart(&self, key: &str, data: Bytes) -> Result<()> {
        let stream = futures::stream::iter(
            (0..data.len())
                .step_by(PART_SIZE)
                .map(|start| Ok(data.slice(start..(start + PART_SIZE).min(data.len()))))
                .collect::<Vec<_>>(),
        );
        self.put_stream(key, stream.boxed()).await
    }

    /// CreateMultipartUpload, with `lock` and the SHA-256 checksum algorithm if set; the
    /// upload id.
    async fn start_upload(&self, key: &str, lock: Option<WriteLock>) -> Result<String> {
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(key));
        if let Some(lock) = lock {
            create = create
                .object_lock_mode(ObjectLockMode::from(lock.mode.as_str()))
                .object_lock_retain_until_date(to_smithy(lock.until))
                .checksum_algorithm(ChecksumAlgorithm::Sha256);
        }
        let created = create
            .send()
            .await
            .map_err(|e| self.error("start upload of", key, e))?;
        match created.upload_id() {
            Some(id) if !id.is_empty() => Ok(id.to_string()),
            _ => Err(self.malformed("start upload of", key, "no upload id")),
        }
    }

    /// One part; with `checksum` (a locked upload, created with the SHA-256 algorithm) the
    /// part carries its SHA-256, which the completion repeats.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
        checksum: bool,
    ) -> Result<CompletedPart> {
        let sha256 = checksum.then(|| sha256_base64(&body));
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .upload_id(upload_id)
            .part_number(number)
            .set_checksum_sha256(sha256.clone())
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.error("upload part of", key, e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_string))
            .set_checksum_sha256(sha256)
            .build())
    }

    /// Complete a multipart upload of `total` bytes; the version it made, if the server
    /// said.
    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        total: u64,
    ) -> Result<Option<String>> {
        let done = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        match done {
            Ok(out) => Ok(out.version_id().map(str::to_string)),
            // Some servers (moto) answer 200 with a body the SDK cannot parse: the object
            // is there if it has the size we uploaded.
            Err(e) if e.raw_response().map(|r| r.status_code()) == Some(200) => {
                match self.size_of(key).await? {
                    Some(n) if n == total => Ok(None),
                    _ => Err(self.error("complete upload of", key, e)),
                }
            }
            Err(e) => Err(self.error("complete upload of", key, e)),
        }
    }

    /// Best effort: an abandoned upload only costs storage until a lifecycle rule clears it.
    async fn abort_upload(&self, key: &str, upload_id: &str, err: Error) -> Error {
        let _ = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .upload_id(upload_id)
            .send()
            .await;
        err
    }

    async fn size_of(&self, key: &str) -> Result<Option<u64>> {
        match self.head(key).send().await {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) => match self.error("check", key, e) {
                Error::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.size_of(key).await?.is_some())
    }

    /// The whole object or a range of it; in locked mode past a delete marker.
    async fn read(&self, key: &str, range: Option<String>) -> Result<Bytes> {
        match self.get_with_range(key, range.clone(), None).await {
            Err(Error::NotFound(what)) if self.locked() => match self.live_version(key).await? {
                Some(v) => self.get_with_range(key, range, Some(v.id)).await,
                None => Err(Error::NotFound(what)),
            },
            other => other,
        }
    }

    async fn get_with_range(
        &self,
        key: &str,
        range: Option<String>,
        version: Option<String>,
    ) -> Result<Bytes> {
        let mut last = None;
        let attempts = BODY_READ_ATTEMPTS.min(max_attempts());
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
            }
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .set_range(range.clone())
                .set_version_id(version.clone())
                .send()
                .await;
            let out = match out {
                Ok(out) => out,
                // A range past the end of a (truncated) object: no bytes there.
                Err(e) if range.is_some() && e.code() == Some("InvalidRange") => {
                    return Ok(Bytes::new())
                }
                Err(e) => return Err(self.error("read", key, e)),
            };
            match out.body.collect().await {
                Ok(body) => return Ok(body.into_bytes()),
                Err(e) => {
                    let e = error_chain(&e);
                    tracing::warn!(key, attempt, error = %e, "reading an S3 body failed; retrying");
                    last = Some(e);
                }
            }
        }
        Err(Error::Store(format!(
            "read s3://{}/{} failed: the connection broke while the object was being received, {attempts} attempts: {}",
            self.bucket,
            self.full_key(key),
            last.unwrap_or_default()
        )))
    }

    /// Every version and delete marker whose key starts with `prefix`, page by page.
    async fn versions(&self, prefix: &str) -> Result<Vec<Version>> {
        const OP: &str = "list versions of";
        let full = self.full_key(prefix);
        let mut markers: (Option<String>, Option<String>) = (None, None);
        let mut out = Vec::new();
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_key_marker(markers.0.clone())
                .set_version_id_marker(markers.1.clone())
                .set_max_keys(self.version_page)
                .send()
                .await
                .map_err(|e| self.error(OP, prefix, e))?;
            for v in page.versions() {
                let (Some(key), Some(id)) = (v.key(), v.version_id()) else {
                    return Err(self.malformed(OP, prefix, "a version without a key or an id"));
                };
                let size = v
                    .size()
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| self.malformed(OP, prefix, "a version without a size"))?;
                out.push(Version {
                    key: key.to_string(),
                    id: id.to_string(),
                    delete_marker: false,
                    size,
                    modified: v.last_modified().and_then(from_smithy),
                    latest: v.is_latest().unwrap_or(false),
                });
            }
            for m in page.delete_markers() {
                let (Some(key), Some(id)) = (m.key(), m.version_id()) else {
                    return Err(self.malformed(
                        OP,
                        prefix,
                        "a delete marker without a key or an id",
                    ));
                };
                out.push(Version {
                    key: key.to_string(),
                    id: id.to_string(),
                    delete_marker: true,
                    size: 0,
                    modified: m.last_modified().and_then(from_smithy),
                    latest: m.is_latest().unwrap_or(false),
                });
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            let next = (
                page.next_key_marker().map(str::to_string),
                page.next_version_id_marker().map(str::to_string),
            );
            if next.0.is_none() || next == markers {
                return Err(self.malformed(
                    OP,
                    prefix,
                    "a truncated listing without a next page, or one that starts where this one did",
                ));
            }
            markers = next;
        }
    }

    /// The newest version of `key` that is not a delete marker.
    async fn live_version(&self, key: &str) -> Result<Option<Version>> {
        let full = self.full_key(key);
        let versions = self.versions(key).await?;
        Ok(newest_live(versions.iter().filter(|v| v.key == full)).cloned())
    }

    /// The lock headers of a version (the current one if `None`), as HeadObject gives them.
    async fn head_lock(&self, key: &str, version: Option<&str>) -> Result<LockState> {
        const OP: &str = "check the retention of";
        let out = self
            .head(key)
            .set_version_id(version.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.error(OP, key, e))?;
        let mode = out
            .object_lock_mode()
            .map(|m| m.as_str().parse::<LockMode>())
            .transpose()
            .map_err(|_| self.malformed(OP, key, "an unknown Object Lock mode"))?;
        let until = out
            .object_lock_retain_until_date()
            .map(|t| {
                from_smithy(t)
                    .ok_or_else(|| self.malformed(OP, key, "a retain-until date out of range"))
            })
            .transpose()?;
        Ok(LockState {
            version: out
                .version_id()
                .or(version)
                .filter(|v| !v.is_empty())
                .map(str::to_string),
            mode,
            until,
            legal_hold: out
                .object_lock_legal_hold_status()
                .is_some_and(|s| s.as_str() == "ON"),
        })
    }

    /// GetObjectRetention of a version; `None` if it has no retention.
    async fn get_retention(&self, key: &str, version: Option<&str>) -> Result<Option<Retention>> {
        const OP: &str = "read the retention of";
        let out = self
            .client
            .get_object_retention()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_version_id(version.map(str::to_string))
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                let message = e.message().unwrap_or_default().to_lowercase();
                return match (status_of(&e), e.code().unwrap_or_default()) {
                    (_, "NoSuchObjectLockConfiguration") => Ok(None),
                    // A bucket without Object Lock.
                    (_, "InvalidRequest") if message.contains("lock") => Ok(None),
                    // A server without GetObjectRetention that answers with the object
                    // itself (moto 5): the HEAD before this showed no lock.
                    (Some(200), _) => {
                        tracing::debug!(key, "the S3 server's GetObjectRetention answer is not one; taking HeadObject's");
                        Ok(None)
                    }
                    _ => Err(self.error(OP, key, e)),
                };
            }
        };
        let Some(r) = out.retention() else {
            return Ok(None);
        };
        let mode = r
            .mode()
            .map(|m| m.as_str().parse::<LockMode>())
            .transpose()
            .map_err(|_| self.malformed(OP, key, "an unknown Object Lock mode"))?;
        let until = r
            .retain_until_date()
            .map(|t| {
                from_smithy(t)
                    .ok_or_else(|| self.malformed(OP, key, "a retain-until date out of range"))
            })
            .transpose()?;
        Ok(Some(Retention { mode, until }))
    }

    /// A version's lock: HeadObject's lock headers, or, when it shows none (S3 leaves them
    /// out for a caller without `s3:GetObjectRetention`), GetObjectRetention's answer.
    async fn lock_of(&self, key: &str, version: Option<&str>) -> Result<LockState> {
        let mut state = self.head_lock(key, version).await?;
        if state.mode.is_none() && state.until.is_none() {
            let asked = state.version.clone();
            if let Some(r) = self
                .get_retention(key, asked.as_deref().or(version))
                .await?
            {
                state.mode = r.mode;
                state.until = r.until;
            }
        }
        Ok(state)
    }

    /// The lock of the object's current version; in locked mode, when a delete marker is
    /// current, of its newest version that is not one.
    async fn current_lock(&self, key: &str) -> Result<LockState> {
        match self.lock_of(key, None).await {
            Err(Error::NotFound(what)) if self.locked() => match self.live_version(key).await? {
                Some(v) => {
                    let mut state = self.lock_of(key, Some(&v.id)).await?;
                    state.version = Some(v.id);
                    Ok(state)
                }
                None => Err(Error::NotFound(what)),
            },
            other => other,
        }
    }

    /// PutObjectRetention (the SDK adds the checksum this request requires).
    async fn put_retention(
        &self,
        key: &str,
        version: Option<&str>,
        mode: LockMode,
        until: DateTime<Utc>,
    ) -> Result<()> {
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_version_id(version.map(str::to_string))
            .retention(
                ObjectLockRetention::builder()
                    .mode(ObjectLockRetentionMode::from(mode.as_str()))
                    .retain_until_date(to_smithy(until))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.error("lock", key, e))?;
        Ok(())
    }

    /// Make sure a version just written by a multipart upload carries `lock`: some
    /// servers (moto) drop the lock headers of CreateMultipartUpload.
    async fn ensure_locked(&self, key: &str, version: Option<&str>, lock: WriteLock) -> Result<()> {
        let state = self.head_lock(key, version).await?;
        if state.mode.is_some() && state.until.is_some_and(|u| u >= ceil_second(lock.until)) {
            return Ok(());
        }
        let mode = match state.mode {
            Some(LockMode::Compliance) => LockMode::Compliance,
            _ => lock.mode,
        };
        let version = state.version.as_deref().or(version);
        self.put_retention(key, version, mode, lock.until).await
    }

    /// Locked mode's delete: every version and every delete marker of `key`. A version S3
    /// keeps under retention is left, and reported as [`Error::Retained`] once the others
    /// are gone.
    async fn delete_versions(&self, key: &str) -> Result<()> {
        let full = self.full_key(key);
        let versions: Vec<Version> = self
            .versions(key)
            .await?
            .into_iter()
            .filter(|v| v.key == full)
            .collect();
        // The refused versions' retain-until dates (`None`: unknown), and legal holds.
        let mut kept: Vec<Option<DateTime<Utc>>> = Vec::new();
        let mut held = false;
        for v in &versions {
            let Err(e) = self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(&full)
                .version_id(&v.id)
                .send()
                .await
            else {
                continue;
            };
            let status = status_of(&e);
            let code = e.code().unwrap_or_default().to_string();
            // Gone already (another prune, a lifecycle rule).
            if status == Some(404) || code == "NoSuchVersion" || code == "NoSuchKey" {
                continue;
            }
            if !v.delete_marker && (status == Some(403) || code == "AccessDenied") {
                // S3 answers AccessDenied both for a version under retention and for
                // credentials without s3:DeleteObjectVersion: the version's lock tells.
                match self.lock_of(key, Some(&v.id)).await {
                    Ok(state) if state.legal_hold => {
                        held = true;
                        continue;
                    }
                    Ok(state) if state.until.is_some_and(|u| u > Utc::now() - CLOCK_SKEW) => {
                        kept.push(state.until);
                        continue;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        kept.push(None);
                        continue;
                    }
                }
            }
            return Err(self.error("delete", key, e));
        }
        let target = format!("s3://{}/{full}", self.bucket);
        let later = "it is not deleted now; a later prune deletes it";
        if held {
            return Err(Error::Retained(format!(
                "{target} is under an S3 Object Lock legal hold: {later} once the hold is lifted"
            )));
        }
        if kept.is_empty() {
            return Ok(());
        }
        Err(Error::Retained(match kept.iter().max().copied().flatten() {
            Some(until) if kept.iter().all(Option::is_some) => format!(
                "{target} is under S3 Object Lock retention until {}: {later} after that date",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            _ => format!(
                "{target} is under S3 Object Lock retention (its retain-until date could not be read): {later} after that date"
            ),
        }))
    }

    /// Locked mode's listing: per key, its newest version that is not a delete marker.
    async fn list_versions(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut newest: BTreeMap<String, Version> = BTreeMap::new();
        for v in self.versions(prefix).await? {
            if v.delete_marker {
                continue;
            }
            match newest.get(&v.key) {
                Some(best) if !v.newer_than(best) => {}
                _ => {
                    newest.insert(v.key.clone(), v);
                }
            }
        }
        Ok(newest
            .into_values()
            .filter_map(|v| {
                let rel = v.key.strip_prefix(&self.prefix)?;
                Some(ObjectInfo {
                    key: rel.to_string(),
                    size: v.size,
                    modified: v.modified,
                })
            })
            .collect())
    }
}

/// An object being read by `open_read`: where it stopped, and how to ask for the rest.
struct Resume {
    store: S3Store,
    key: String,
    /// The version read, when it is not the current one (a delete marker hid it).
    version: Option<String>,
    etag: Option<String>,
    size: Option<u64>,
    body: Option<ByteStream>,
    offset: u64,
    /// Breaks since the last bytes arrived.
    failures: u32,
}

/// The region of `bucket`, as S3 names it in HeadBucket's `x-amz-bucket-region` header (on
/// an error answer too: a 301 from the wrong region carries it), asked in us-east-1 as the
/// Velero AWS plugin's GetBucketRegion does.
async fn bucket_region(conf: &aws_sdk_s3::config::Builder, bucket: &str) -> Result<String> {
    let probe = Client::from_conf(conf.clone().region(Region::new("us-east-1")).build());
    let answer = probe.head_bucket().bucket(bucket).send().await;
    let header = match &answer {
        Ok(out) => out.bucket_region().map(str::to_string),
        Err(e) => e
            .raw_response()
            .and_then(|r| r.headers().get("x-amz-bucket-region"))
            .map(str::to_string),
    };
    match header.as_deref().map(parse_region) {
        Some(Ok(region)) => Ok(region),
        Some(Err(e)) => Err(e),
        None => Err(Error::Store(format!(
            "cannot find the region of bucket {bucket:?}: S3 named none ({}); set config.region in the BackupStorageLocation",
            match answer {
                Ok(_) => "HeadBucket answered without x-amz-bucket-region".to_string(),
                Err(e) => error_chain(&e),
            }
        ))),
    }
}

/// A region name from the server: letters, digits and `-` only, as AWS names them.
fn parse_region(raw: &str) -> Result<String> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(raw.to_string())
    } else {
        Err(Error::Store(format!(
            "the S3 server named the bucket's region {:?}, which is not a region name; set config.region in the BackupStorageLocation",
            raw.chars().take(80).collect::<String>()
        )))
    }
}

/// The HTTP status of a raw response, whatever its type.
pub trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// A connection that was made and then reset or closed under a request, as opposed to one
/// that could not be made.
fn connection_broke(chain: &str) -> bool {
    let chain = chain.to_lowercase();
    ["reset by peer", "connection closed", "broken pipe"]
        .iter()
        .any(|s| chain.contains(s))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[async_trait]
impl Store for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix.trim_end_matches('/'))
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<PutOutcome> {
        if mode == PutMode::CreateNew
            && (data.len() > MULTIPART_THRESHOLD)
            && self.exists(key).await?
        {
            return Ok(PutOutcome::AlreadyExists);
        }
        if data.len() > MULTIPART_THRESHOLD {
            self.put_multipart(key, data).await?;
            return Ok(PutOutcome::Written);
        }
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .body(ByteStream::from(data.clone()));
        if mode == PutMode::CreateNew {
            req = req.if_none_match("*");
        }
        if let Some(lock) = self.write_lock() {
            req = req
                .object_lock_mode(ObjectLockMode::from(lock.mode.as_str()))
                .object_lock_retain_until_date(to_smithy(lock.until))
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .checksum_sha256(sha256_base64(&data));
        }
        match req.send().await {
            Ok(_) => Ok(PutOutcome::Written),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status_code());
                match (mode, status) {
                    (PutMode::CreateNew, Some(412 | 409)) => Ok(PutOutcome::AlreadyExists),
                    // Servers without conditional writes: check, then write.
                    (PutMode::CreateNew, Some(501)) => {
                        if self.exists(key).await? {
                            Ok(PutOutcome::AlreadyExists)
                        } else {
                            Box::pin(self.put(key, data, PutMode::Overwrite)).await
                        }
                    }
                    _ => Err(self.error("write", key, e)),
                }
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.read(key, None).await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let range = format!("bytes={}-{}", offset, offset.saturating_add(len - 1));
        self.read(key, Some(range)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        if self.locked() {
            return self.list_versions(prefix).await;
        }
        let mut out = Vec::new();
        for (rel, obj) in self.list_current(prefix).await? {
            out.push(ObjectInfo {
                key: rel,
                size: obj.size().unwrap_or(0).max(0) as u64,
                modified: obj
                    .last_modified()
                    .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// A body that breaks off is resumed where it stopped (a range request for the same
    /// ETag), up to the body-read attempts without progress.
    async fn open_read(&self, key: &str) -> Result<ByteReader> {
        let first = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.error("read", key, e));
        let (out, version) = match first {
            Ok(out) => (out, None),
            Err(Error::NotFound(what)) if self.locked() => {
                let Some(v) = self.live_version(key).await? else {
                    return Err(Error::NotFound(what));
                };
                let out = self
                    .client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(self.full_key(key))
                    .version_id(&v.id)
                    .send()
                    .await
                    .map_err(|e| self.error("read", key, e))?;
                (out, Some(v.id))
            }
            Err(e) => return Err(e),
        };
        let state = Resume {
            store: self.clone(),
            key: key.to_string(),
            version,
            etag: out.e_tag().map(str::to_string),
            size: out.content_length().map(|n| n.max(0) as u64),
            body: Some(out.body),
            offset: 0,
            failures: 0,
        };
        let stream = futures::stream::try_unfold(state, |mut s| async move {
            let attempts = BODY_READ_ATTEMPTS.min(max_attempts());
            loop {
                if let Some(body) = s.body.as_mut() {
                    match body.next().await {
                        Some(Ok(bytes)) => {
                            s.offset += bytes.len() as u64;
                            s.failures = 0;
                            return Ok(Some((bytes, s)));
                        }
                        None => return Ok(None),
                        Some(Err(e)) => {
                            let e = error_chain(&e);
                            s.failures += 1;
                            if s.failures >= attempts {
                                return Err(std::io::Error::other(format!(
                                    "read s3://{}/{} failed: the connection broke while the object was being received, {attempts} attempts: {e}",
                                    s.store.bucket,
                                    s.store.full_key(&s.key),
                                )));
                            }
                            tracing::warn!(key = s.key, offset = s.offset, error = %e, "reading an S3 body failed; resuming");
                            tokio::time::sleep(Duration::from_millis(250 << s.failures)).await;
                            s.body = None;
                        }
                    }
                }
                if s.size.is_some_and(|n| s.offset >= n) {
                    return Ok(None);
                }
                let out = s
                    .store
                    .client
                    .get_object()
                    .bucket(&s.store.bucket)
                    .key(s.store.full_key(&s.key))
                    .set_version_id(s.version.clone())
                    .range(format!("bytes={}-", s.offset))
                    .set_if_match(s.etag.clone())
                    .send()
                    .await
                    .map_err(|e| std::io::Error::other(s.store.error("read", &s.key, e)))?;
                if out.content_range().is_none() {
                    return Err(std::io::Error::other(format!(
                        "read s3://{}/{}: the server ignored the range asked for to resume",
                        s.store.bucket,
                        s.store.full_key(&s.key),
                    )));
                }
                s.body = Some(out.body);
            }
        });
        Ok(Box::new(tokio_util::io::StreamReader::new(Box::pin(
            stream,
        ))))
    }

    async fn put_stream(&self, key: &str, mut data: BoxStream<'_, Result<Bytes>>) -> Result<()> {
        let mut buf = bytes::BytesMut::new();
        let mut total = 0u64;
        let mut upload: Option<(String, Vec<CompletedPart>)> = None;
        let lock = self.write_lock();
        let result: Result<()> = async {
            while let Some(piece) = data.next().await {
                let piece = piece?;
                total += piece.len() as u64;
                buf.extend_from_slice(&piece);
                while buf.len() >= PART_SIZE {
                    let part = buf.split_to(PART_SIZE).freeze();
                    if upload.is_none() {
                        upload = Some((self.start_upload(key, lock).await?, Vec::new()));
                    }
                    let (id, parts) = upload.as_mut().expect("started");
                    parts.push(
                        self.upload_part(key, id, parts.len() as i32 + 1, part, lock.is_some())
                            .await?,
                    );
                }
            }
            Ok(())
        }
        .await;
        let Some((id, mut parts)) = upload else {
            result?;
            return self
                .put(key, buf.freeze(), PutMode::Overwrite)
                .await
                .map(|_| ());
        };
        let finished = match result {
            Ok(()) => {
                if !buf.is_empty() {
                    let n = parts.len() as i32 + 1;
                    match self
                        .upload_part(key, &id, n, buf.freeze(), lock.is_some())
                        .await
                    {
                        Ok(p) => parts.push(p),
                        Err(e) => return Err(self.abort_upload(key, &id, e).await),
                    }
                }
                self.complete(key, &id, parts, total).await
            }
            Err(e) => Err(e),
        };
        match (finished, lock) {
            (Ok(version), Some(lock)) => self.ensure_locked(key, version.as_deref(), lock).await,
            (Ok(_), None) => Ok(()),
            (Err(e), _) => Err(self.abort_upload(key, &id, e).await),
        }
    }

    /// In locked mode every version and delete marker of the key (a plain DELETE would
    /// only hide it); [`Error::Retained`] for a version S3 keeps.
    async fn delete(&self, key: &str) -> Result<()> {
        if self.locked() {
            return self.delete_versions(key).await;
        }
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.error("delete", key, e))?;
        Ok(())
    }

    async fn bucket_lock(&self) -> Result<Option<BucketLock>> {
        const OP: &str = "read the Object Lock configuration of";
        let out = match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.code() == Some("ObjectLockConfigurationNotFoundError") => {
                return Ok(Some(BucketLock::default()))
            }
            // A server without Object Lock: none of its buckets is locked.
            Err(e) if status_of(&e) == Some(501) || e.code() == Some("NotImplemented") => {
                return Ok(Some(BucketLock::default()))
            }
            Err(e) => return Err(self.error(OP, "", e)),
        };
        let bad = |what: &str| {
            Error::Store(format!(
                "{OP} s3://{} failed: the S3 server's answer is malformed: {what}",
                self.bucket
            ))
        };
        let conf = out
            .object_lock_configuration()
            .ok_or_else(|| bad("no ObjectLockConfiguration"))?;
        let enabled = match conf.object_lock_enabled().map(|e| e.as_str()) {
            Some("Enabled") => true,
            None | Some("Disabled") => false,
            Some(_) => return Err(bad("an unknown ObjectLockEnabled value")),
        };
        let default_retention = match conf.rule().and_then(|r| r.default_retention()) {
            None => None,
            Some(d) => {
                let mode = d
                    .mode()
                    .ok_or_else(|| bad("a default retention without a mode"))?
                    .as_str()
                    .parse::<LockMode>()
                    .map_err(|_| bad("an unknown default retention mode"))?;
                // Exactly one of Days and Years (moto sends the other as 0).
                let positive =
                    |n: Option<i32>| n.filter(|n| *n != 0).map(|n| u32::try_from(n).ok());
                let days = match (positive(d.days()), positive(d.years())) {
                    (Some(days), None) => days,
                    (None, Some(years)) => years.and_then(|y| y.checked_mul(365)),
                    _ => None,
                }
                .ok_or_else(|| bad("a default retention without one positive period"))?;
                Some((mode, days))
            }
        };
        Ok(Some(BucketLock {
            enabled,
            default_retention,
        }))
    }

    fn set_write_retention(&self, retention: Option<WriteRetention>) {
        *self
            .write_retention
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = retention;
    }

    async fn retention(&self, key: &str) -> Result<Retention> {
        let state = self.current_lock(key).await?;
        Ok(Retention {
            mode: state.mode,
            until: state.until,
        })
    }

    /// PutObjectRetention on the current version (in locked mode past a delete marker),
    /// in the write retention's mode; a COMPLIANCE retention stays COMPLIANCE. A date in
    /// the past locks nothing and sends nothing.
    async fn past_versions(&self, key: &str) -> Result<Vec<String>> {
        if !self.locked() {
            return Ok(Vec::new());
        }
        let full = self.full_key(key);
        let mut live: Vec<Version> = self
            .versions(key)
            .await?
            .into_iter()
            .filter(|v| v.key == full && !v.delete_marker)
            .collect();
        live.sort_by(|a, b| {
            if a.newer_than(b) {
                std::cmp::Ordering::Less
            } else if b.newer_than(a) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        Ok(live.into_iter().skip(1).map(|v| v.id).collect())
    }

    async fn get_version(&self, key: &str, version: &str) -> Result<Bytes> {
        self.get_with_range(key, None, Some(version.to_string()))
            .await
    }

    async fn extend_retention(&self, key: &str, until: DateTime<Utc>) -> Result<()> {
        let until = ceil_second(until);
        let state = self.current_lock(key).await?;
        if until <= Utc::now() || state.until.is_some_and(|u| u >= until) {
            return Ok(());
        }
        let mode = match (state.mode, self.write_retention().map(|w| w.mode)) {
            (Some(LockMode::Compliance), _) => LockMode::Compliance,
            (_, Some(mode)) | (Some(mode), None) => mode,
            (None, None) => {
                return Err(Error::Usage(format!(
                    "cannot lock s3://{}/{}: no Object Lock mode is set for this store's writes",
                    self.bucket,
                    self.full_key(key)
                )))
            }
        };
        self.put_retention(key, state.version.as_deref(), mode, until)
            .await
    }

    /// `put` inside a scope the [`StorageClassHeader`] interceptor reads, so the PUT (or
    /// CreateMultipartUpload) carries `x-amz-storage-class` and every other header `put`
    /// sets, unchanged.
    async fn put_in_class(
        &self,
        key: &str,
        data: Bytes,
        mode: PutMode,
        class: &StorageClass,
    ) -> Result<PutOutcome> {
        if class.is_standard() {
            return self.put(key, data, mode).await;
        }
        PUT_CLASS
            .scope(class.clone(), self.put(key, data, mode))
            .await
    }

    async fn list_classes(&self, prefix: &str) -> Result<Vec<ClassedObject>> {
        let mut out = Vec::new();
        for (rel, obj) in self.list_current(prefix).await? {
            out.push(ClassedObject {
                key: rel,
                size: obj.size().unwrap_or(0).max(0) as u64,
                class: self.class_named(obj.storage_class().map(|c| c.as_str()), prefix)?,
            });
        }
        Ok(out)
    }

    async fn cold_state(&self, key: &str) -> Result<ColdState> {
        const OP: &str = "check the storage class of";
        let out = self
            .head(key)
            .send()
            .await
            .map_err(|e| self.error(OP, key, e))?;
        let class = self.class_named(out.storage_class().map(|c| c.as_str()), key)?;
        let thaw = match out.restore() {
            None => Thaw::NotRequested,
            Some(header) => parse_restore(header)
                .ok_or_else(|| self.malformed(OP, key, "an x-amz-restore header it cannot read"))?,
        };
        Ok(ColdState { class, thaw })
    }

    async fn request_thaw(&self, key: &str, tier: ThawTier, days: u32) -> Result<()> {
        use aws_sdk_s3::types::{GlacierJobParameters, RestoreRequest, Tier};
        let job = GlacierJobParameters::builder()
            .tier(Tier::from(tier.as_str()))
            .build()
            .map_err(|e| Error::Other(format!("cannot build a thaw request: {e}")))?;
        let request = RestoreRequest::builder()
            .days(i32::try_from(days).unwrap_or(i32::MAX))
            .glacier_job_parameters(job)
            .build();
        match self
            .client
            .restore_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .restore_request(request)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Asked already (by us, earlier, or anyone): S3 keeps working on that one.
            Err(e) if e.code() == Some("RestoreAlreadyInProgress") => Ok(()),
            Err(e) => Err(self.error("thaw", key, e)),
        }
    }
}

tokio::task_local! {
    /// The storage class of the object `put_in_class` is writing.
    static PUT_CLASS: StorageClass;
}

/// Adds `x-amz-storage-class` to the PutObject or CreateMultipartUpload sent inside
/// `put_in_class`; every other request goes out as it was built.
#[derive(Debug)]
struct StorageClassHeader;

impl aws_sdk_s3::config::Intercept for StorageClassHeader {
    fn name(&self) -> &'static str {
        "drydock storage class"
    }

    fn modify_before_signing(
        &self,
        context: &mut aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> std::result::Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let Ok(class) = PUT_CLASS.try_with(StorageClass::clone) else {
            return Ok(());
        };
        let operation = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map(|m| m.name().to_string());
        if matches!(
            operation.as_deref(),
            Some("PutObject" | "CreateMultipartUpload")
        ) {
            context
                .request_mut()
                .headers_mut()
                .insert("x-amz-storage-class", class.as_str().to_string());
        }
        Ok(())
    }
}

/// `x-amz-restore`: `ongoing-request="true"`, or `ongoing-request="false",
/// expiry-date="…"`; `None` for anything else.
fn parse_restore(header: &str) -> Option<Thaw> {
    let field = |name: &str| {
        let at = header.find(&format!("{name}=\""))? + name.len() + 2;
        let len = header[at..].find('"')?;
        Some(header[at..at + len].to_string())
    };
    match field("ongoing-request")?.as_str() {
        "true" => Some(Thaw::Ongoing),
        "false" => Some(Thaw::Ready {
            expiry: field("expiry-date"),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: &str, marker: bool, secs: i64, latest: bool) -> Version {
        Version {
            key: "k".into(),
            id: id.into(),
            delete_marker: marker,
            size: 1,
            modified: DateTime::from_timestamp(secs, 0),
            latest,
        }
    }

    #[test]
    fn the_newest_live_version_skips_delete_markers() {
        let vs = [
            version("marker", true, 30, true),
            version("old", false, 10, false),
            version("new", false, 20, false),
        ];
        assert_eq!(newest_live(&vs).unwrap().id, "new");
        // Same millisecond: the server's IsLatest decides, else the first listed.
        let tie = [
            version("a", false, 20, false),
            version("b", false, 20, true),
        ];
        assert_eq!(newest_live(&tie).unwrap().id, "b");
        let tie = [
            version("a", false, 20, false),
            version("b", false, 20, false),
        ];
        assert_eq!(newest_live(&tie).unwrap().id, "a");
        assert!(newest_live(&[version("m", true, 1, true)]).is_none());
    }

    #[test]
    fn bucket_regions_from_the_server_are_checked() {
        assert_eq!(parse_region("eu-west-3").unwrap(), "eu-west-3");
        for bad in ["", "EU", "eu west", "eu-west-3\r\nx: y", &"a".repeat(65)] {
            assert!(parse_region(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_the_restore_header() {
        assert_eq!(
            parse_restore(r#"ongoing-request="true""#),
            Some(Thaw::Ongoing)
        );
        assert_eq!(
            parse_restore(
                r#"ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT""#
            ),
            Some(Thaw::Ready {
                expiry: Some("Fri, 21 Dec 2012 00:00:00 GMT".into())
            })
        );
        assert_eq!(parse_restore(r#"ongoing-request="maybe""#), None);
        assert_eq!(parse_restore("garbage"), None);
        assert_eq!(parse_restore(r#"ongoing-request="true"#), None);
    }

    #[test]
    fn retention_dates_go_to_s3_in_whole_seconds_rounded_up() {
        let t = DateTime::from_timestamp(1_000, 500_000_000).unwrap();
        assert_eq!(to_smithy(t).secs(), 1_001);
        assert_eq!(
            from_smithy(&to_smithy(t)),
            DateTime::from_timestamp(1_001, 0)
        );
        // The checksum S3 wants: base64 of the SHA-256.
        assert_eq!(
            sha256_base64(b""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }
}
