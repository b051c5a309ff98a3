//! What a Velero BackupStorageLocation asks of S3 requests beyond addressing: the TLS trust
//! of the connection, server-side encryption (SSE-S3, SSE-KMS, SSE-C), object tags and
//! request checksums — applied the way the Velero AWS plugin applies them
//! (velero-plugin-for-aws/object_store.go), to every request that needs them.
//!
//! Both are added to the SDK client rather than to each call: the headers by an interceptor
//! (so a new call site cannot forget the SSE-C key), the TLS settings by an HTTP client.

use std::fmt;
use std::sync::{Arc, OnceLock};

use aws_sdk_s3::operation::put_object::PutObjectInput;
use aws_sdk_s3::operation::upload_part::UploadPartInput;
use aws_sdk_s3::types::ChecksumAlgorithm;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse, Metadata};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use base64::Engine as _;
use md5::Digest as _;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// An SSE-C key (32 bytes), kept only as the two header values S3 wants: the key in base64,
/// wiped when dropped, and its MD5. `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct CustomerKey {
    key_b64: Zeroizing<String>,
    md5_b64: String,
}

impl CustomerKey {
    pub fn new(raw: &[u8; 32]) -> Self {
        let b64 = base64::engine::general_purpose::STANDARD;
        CustomerKey {
            key_b64: Zeroizing::new(b64.encode(raw)),
            md5_b64: b64.encode(md5::Md5::digest(raw)),
        }
    }
}

impl fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomerKey(<redacted>)")
    }
}

/// How objects are encrypted at rest by the S3 server (on top of drydock's own encryption).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encryption {
    /// `x-amz-server-side-encryption` (`AES256`, `aws:kms`, `aws:kms:dsse`) on writes, with
    /// the KMS key id when one is given.
    Server {
        algorithm: String,
        kms_key_id: Option<String>,
    },
    /// SSE-C: the key goes with every write and every read of an object.
    Customer(CustomerKey),
}

/// Per-request settings of a store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestSettings {
    pub encryption: Option<Encryption>,
    /// `x-amz-tagging` of every object written (URL-encoded `k=v&k2=v2`).
    pub tagging: Option<String>,
    /// A checksum every PutObject and UploadPart carries; `None`: only where S3 requires one
    /// (some S3 servers, Ceph and B2 among them, refuse the newer checksum headers).
    pub checksum: Option<ChecksumAlgorithm>,
}

impl RequestSettings {
    pub fn is_empty(&self) -> bool {
        *self == RequestSettings::default()
    }

    /// The headers operation `op` gets.
    fn headers(&self, op: &str) -> Vec<(&'static str, String)> {
        let creates = matches!(op, "PutObject" | "CreateMultipartUpload");
        let mut out = Vec::new();
        match &self.encryption {
            Some(Encryption::Server {
                algorithm,
                kms_key_id,
            }) if creates => {
                out.push(("x-amz-server-side-encryption", algorithm.clone()));
                if let Some(id) = kms_key_id {
                    out.push(("x-amz-server-side-encryption-aws-kms-key-id", id.clone()));
                }
            }
            // Every request that reads or writes object data (S3 refuses a GET or HEAD of an
            // SSE-C object without the key).
            Some(Encryption::Customer(key))
                if creates
                    || matches!(
                        op,
                        "GetObject" | "HeadObject" | "UploadPart" | "CompleteMultipartUpload"
                    ) =>
            {
                out.push((
                    "x-amz-server-side-encryption-customer-algorithm",
                    "AES256".into(),
                ));
                out.push((
                    "x-amz-server-side-encryption-customer-key",
                    key.key_b64.to_string(),
                ));
                out.push((
                    "x-amz-server-side-encryption-customer-key-md5",
                    key.md5_b64.clone(),
                ));
            }
            _ => {}
        }
        if let (Some(tags), true) = (&self.tagging, creates) {
            out.push(("x-amz-tagging", tags.clone()));
        }
        out
    }
}

/// Applies [`RequestSettings`] to every request of a client.
#[derive(Debug)]
pub(super) struct ApplySettings(pub(super) Arc<RequestSettings>);

impl Intercept for ApplySettings {
    fn name(&self) -> &'static str {
        "drydock::RequestSettings"
    }

    /// The checksum algorithm, where the call did not choose one (a locked write brings its
    /// SHA-256); the SDK's checksum interceptor, which runs after this one, computes it.
    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let Some(algorithm) = &self.0.checksum else {
            return Ok(());
        };
        let input = context.input_mut();
        if let Some(put) = input.downcast_mut::<PutObjectInput>() {
            if put.checksum_algorithm.is_none() && put.checksum_sha256.is_none() {
                put.checksum_algorithm = Some(algorithm.clone());
            }
        } else if let Some(part) = input.downcast_mut::<UploadPartInput>() {
            if part.checksum_algorithm.is_none() && part.checksum_sha256.is_none() {
                part.checksum_algorithm = Some(algorithm.clone());
            }
        }
        Ok(())
    }

    /// Before signing, so the signature covers them.
    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let op = cfg
            .load::<Metadata>()
            .map(Metadata::name)
            .unwrap_or_default();
        let headers = context.request_mut().headers_mut();
        for (name, value) in self.0.headers(op) {
            headers.try_insert(name, value)?;
        }
        Ok(())
    }
}

/// The checksum algorithm named by a BSL's `checksumAlgorithm`, as the plugin's SDK
/// (aws-sdk-go-v2 service/s3 1.48) knows them; `""` turns checksums off.
pub fn checksum_algorithm(name: &str) -> Option<Option<ChecksumAlgorithm>> {
    Some(match name {
        "" => None,
        "CRC32" => Some(ChecksumAlgorithm::Crc32),
        "CRC32C" => Some(ChecksumAlgorithm::Crc32C),
        "SHA1" => Some(ChecksumAlgorithm::Sha1),
        "SHA256" => Some(ChecksumAlgorithm::Sha256),
        _ => return None,
    })
}

/// TLS trust other than the system roots: a private CA, or none at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsTrust {
    /// PEM certificates trusted in addition to the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Accept any certificate (Velero's `insecureSkipTLSVerify`).
    pub insecure_skip_verify: bool,
}

impl TlsTrust {
    pub fn is_default(&self) -> bool {
        *self == TlsTrust::default()
    }
}

/// An HTTP client for the SDK built on reqwest, whose rustls set-up can take extra roots or
/// skip verification (the SDK's own client has no way to skip it).
#[derive(Debug)]
pub(super) struct TlsClient {
    roots: Vec<reqwest::Certificate>,
    insecure: bool,
    /// Built on first use, with the SDK's timeouts, and shared by every request after.
    connector: OnceLock<SharedHttpConnector>,
}

impl TlsClient {
    pub(super) fn new(trust: &TlsTrust) -> Result<Self> {
        let mut roots = crate::net::system_roots();
        if let Some(pem) = &trust.ca_pem {
            roots.extend(crate::net::pem_certificates(pem).ok_or_else(|| {
                Error::Usage("the S3 CA certificate holds no PEM certificate".into())
            })?);
        }
        if trust.insecure_skip_verify {
            tracing::warn!(
                "insecureSkipTLSVerify: the S3 server's certificate is not verified, so anyone on the network path can read and change what drydock sends and receives; give its CA (objectStorage.caCertRef) instead"
            );
        }
        Ok(TlsClient {
            roots,
            insecure: trust.insecure_skip_verify,
            connector: OnceLock::new(),
        })
    }

    fn build(&self, settings: &HttpConnectorSettings) -> reqwest::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .danger_accept_invalid_certs(self.insecure)
            .tls_built_in_root_certs(false);
        for c in &self.roots {
            builder = builder.add_root_certificate(c.clone());
        }
        if let Some(t) = settings.connect_timeout() {
            builder = builder.connect_timeout(t);
        }
        if let Some(t) = settings.read_timeout() {
            builder = builder.read_timeout(t);
        }
        builder.build()
    }
}

impl HttpClient for TlsClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.connector
            .get_or_init(|| {
                SharedHttpConnector::new(Reqwest(self.build(settings).map_err(|e| e.to_string())))
            })
            .clone()
    }
}

/// One reqwest client; or why it could not be built, which every request then reports.
#[derive(Debug, Clone)]
struct Reqwest(std::result::Result<reqwest::Client, String>);

impl HttpConnector for Reqwest {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.0.clone();
        HttpConnectorFuture::new(async move {
            let client = client.map_err(|e| ConnectorError::other(e.into(), None))?;
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            let (parts, body) = request.into_parts();
            let request = reqwest::Request::try_from(http::Request::from_parts(
                parts,
                reqwest::Body::wrap(body),
            ))
            .map_err(|e| ConnectorError::other(e.into(), None))?;
            let response = client.execute(request).await.map_err(|e| {
                if e.is_timeout() {
                    ConnectorError::timeout(e.into())
                } else if e.is_connect() || e.is_request() {
                    ConnectorError::io(e.into())
                } else {
                    ConnectorError::other(e.into(), None)
                }
            })?;
            let (parts, body) = http::Response::<reqwest::Body>::from(response).into_parts();
            HttpResponse::try_from(http::Response::from_parts(
                parts,
                SdkBody::from_body_1_x(body),
            ))
            .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_key_headers_go_with_reads_and_writes_and_never_print() {
        let key = CustomerKey::new(&[7u8; 32]);
        assert_eq!(format!("{key:?}"), "CustomerKey(<redacted>)");
        let s = RequestSettings {
            encryption: Some(Encryption::Customer(key)),
            tagging: Some("a=1&b=2".into()),
            checksum: None,
        };
        for op in [
            "PutObject",
            "CreateMultipartUpload",
            "UploadPart",
            "CompleteMultipartUpload",
            "GetObject",
            "HeadObject",
        ] {
            let h = s.headers(op);
            let md5 = h
                .iter()
                .find(|(n, _)| *n == "x-amz-server-side-encryption-customer-key-md5")
                .unwrap_or_else(|| panic!("{op}"));
            // base64 of MD5(32 × 0x07)
            assert_eq!(md5.1.len(), 24, "{op}");
        }
        for op in ["ListObjectsV2", "DeleteObject", "HeadBucket"] {
            assert!(s.headers(op).is_empty(), "{op}");
        }
        assert!(s
            .headers("PutObject")
            .contains(&("x-amz-tagging", "a=1&b=2".into())));
        assert!(!s
            .headers("GetObject")
            .iter()
            .any(|(n, _)| *n == "x-amz-tagging"));
    }

    #[test]
    fn server_side_encryption_goes_with_writes_only() {
        let s = RequestSettings {
            encryption: Some(Encryption::Server {
                algorithm: "aws:kms".into(),
                kms_key_id: Some("arn:aws:kms:k".into()),
            }),
            ..Default::default()
        };
        assert_eq!(
            s.headers("CreateMultipartUpload"),
            vec![
                ("x-amz-server-side-encryption", "aws:kms".to_string()),
                (
                    "x-amz-server-side-encryption-aws-kms-key-id",
                    "arn:aws:kms:k".to_string()
                )
            ]
        );
        assert!(s.headers("UploadPart").is_empty());
        assert!(s.headers("GetObject").is_empty());
    }

    #[test]
    fn checksum_names_are_the_plugins() {
        assert_eq!(checksum_algorithm(""), Some(None));
        assert_eq!(
            checksum_algorithm("CRC32"),
            Some(Some(ChecksumAlgorithm::Crc32))
        );
        assert_eq!(checksum_algorithm("crc32"), None);
        assert_eq!(checksum_algorithm("MD5"), None);
    }
}
