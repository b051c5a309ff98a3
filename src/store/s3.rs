//! A repository in an S3 bucket (AWS, MinIO, Ceph, SeaweedFS, R2, moto…).
//!
//! Requests go through the SDK's standard retry strategy (exponential backoff with jitter on
//! throttling, 5xx, timeouts and connection errors); reading a body is retried here too,
//! because a connection can break after the headers arrived (a streamed read resumes with a
//! range request where it stopped).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::Bytes;

use super::{ByteReader, ObjectInfo, PutMode, PutOutcome, S3Options, Store};
use crate::error::{Error, Result};
use futures::stream::BoxStream;
use futures::StreamExt;

/// Objects larger than this go up in parts. Above the largest pack (16 MiB target plus
/// one 8 MiB chunk and its header), so a pack is one PUT, not create + 3 parts + complete.
pub const MULTIPART_THRESHOLD: usize = 32 * 1024 * 1024;
pub const PART_SIZE: usize = 8 * 1024 * 1024;
const BODY_READ_ATTEMPTS: u32 = 4;

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
    endpoint: String,
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
                    files
                        .include_default_credentials_file(false)
                        .with_file(ProfileFileKind::Credentials, path)
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
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
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

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<CompletedPart> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.error("upload part of", key, e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_string))
            .build())
    }

    /// Complete a multipart upload of `total` bytes.
    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        total: u64,
    ) -> Result<()> {
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
            Ok(_) => Ok(()),
            // Some servers (moto) answer 200 with a body the SDK cannot parse: the object
            // is there if it has the size we uploaded.
            Err(e) if e.raw_response().map(|r| r.status_code()) == Some(200) => {
                match self.size_of(key).await? {
                    Some(n) if n == total => Ok(()),
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
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
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

    async fn get_with_range(&self, key: &str, range: Option<String>) -> Result<Bytes> {
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
}

/// An object being read by `open_read`: where it stopped, and how to ask for the rest.
struct Resume {
    store: S3Store,
    key: String,
    etag: Option<String>,
    size: Option<u64>,
    body: Option<ByteStream>,
    offset: u64,
    /// Breaks since the last bytes arrived.
    failures: u32,
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
        self.get_with_range(key, None).await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let range = format!("bytes={}-{}", offset, offset + len - 1);
        self.get_with_range(key, Some(range)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
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
                let key = obj.key().unwrap_or_default();
                if let Some(rel) = key.strip_prefix(&self.prefix) {
                    out.push(ObjectInfo {
                        key: rel.to_string(),
                        size: obj.size().unwrap_or(0).max(0) as u64,
                        modified: obj.last_modified().and_then(|t| {
                            chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
                        }),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// A body that breaks off is resumed where it stopped (a range request for the same
    /// ETag), up to the body-read attempts without progress.
    async fn open_read(&self, key: &str) -> Result<ByteReader> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.error("read", key, e))?;
        let state = Resume {
            store: self.clone(),
            key: key.to_string(),
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
        let full = self.full_key(key);
        let result: Result<()> = async {
            while let Some(piece) = data.next().await {
                let piece = piece?;
                total += piece.len() as u64;
                buf.extend_from_slice(&piece);
                while buf.len() >= PART_SIZE {
                    let part = buf.split_to(PART_SIZE).freeze();
                    if upload.is_none() {
                        let created = self
                            .client
                            .create_multipart_upload()
                            .bucket(&self.bucket)
                            .key(&full)
                            .send()
                            .await
                            .map_err(|e| self.error("start upload of", key, e))?;
                        upload = Some((
                            created.upload_id().unwrap_or_default().to_string(),
                            Vec::new(),
                        ));
                    }
                    let (id, parts) = upload.as_mut().expect("started");
                    parts.push(
                        self.upload_part(key, id, parts.len() as i32 + 1, part)
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
                    match self.upload_part(key, &id, n, buf.freeze()).await {
                        Ok(p) => parts.push(p),
                        Err(e) => return Err(self.abort_upload(key, &id, e).await),
                    }
                }
                self.complete(key, &id, parts, total).await
            }
            Err(e) => Err(e),
        };
        match finished {
            Ok(()) => Ok(()),
            Err(e) => Err(self.abort_upload(key, &id, e).await),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.error("delete", key, e))?;
        Ok(())
    }
}
