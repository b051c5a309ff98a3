//! Requests to a registry's `/v2/` API, authenticated as its challenges ask.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use url::Url;

use super::auth::{parse_challenges, Action, Authenticator, Credentials, Refusal, Scheme, Scope};
use super::read_capped;
use crate::error::{Error, Result};
use crate::net::{error_chain, is_tls_error};

/// What `head_manifest` asks for: every manifest kind Harbor stores.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest read: distribution refuses to store one over 4 MiB.
const MANIFEST_LIMIT: usize = 4 << 20;
/// Largest error answer read.
const ERROR_LIMIT: usize = 64 << 10;
/// What pushing to a repository needs (the registry checks pull too for mounts and HEADs).
const PUSH: &[Action] = &[Action::Pull, Action::Push];

/// A manifest: its media type and exact bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// How to reach a registry.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Its address, e.g. https://harbor.example.com or http://registry:5000.
    pub url: String,
    pub credentials: Option<Credentials>,
    /// PEM CA certificates to trust besides the system roots.
    pub ca_cert: Option<PathBuf>,
    /// Send the password over plain http:// to a host that is not loopback.
    pub allow_http: bool,
    /// Bound on each request.
    pub timeout: Duration,
}

/// The answer to a HEAD: its status and, when served, the content's digest.
#[derive(Clone, Debug)]
pub struct Head {
    pub status: StatusCode,
    pub digest: Option<String>,
}

/// How a blob upload began.
#[derive(Debug)]
pub enum Upload {
    /// The registry mounted the blob from the other repository: nothing to send.
    Mounted,
    /// An upload session: send the content to this location.
    Started(Url),
}

/// A client for one registry.
pub struct RegistryClient {
    base: Url,
    http: reqwest::Client,
    auth: Authenticator,
}

impl RegistryClient {
    pub fn new(o: &ClientOptions) -> Result<Self> {
        let base = base_url(&o.url, o.credentials.is_some(), o.allow_http)?;
        let builder = || -> Result<reqwest::ClientBuilder> {
            Ok(
                crate::net::http_client_builder(o.ca_cert.as_deref(), "--registry-ca-cert")?
                    .timeout(o.timeout)
                    .connect_timeout(o.timeout),
            )
        };
        let build = |b: reqwest::ClientBuilder| {
            b.build()
                .map_err(|e| Error::Other(format!("cannot set up the HTTP client: {e}")))
        };
        // reqwest drops Authorization on a redirect to another host (an S3-backed registry
        // redirects blob reads to its bucket); the token client follows none at all.
        let http = build(builder()?)?;
        let token_http = build(builder()?.redirect(reqwest::redirect::Policy::none()))?;
        let auth = Authenticator::new(
            base.clone(),
            o.credentials.clone(),
            o.allow_http,
            token_http,
        );
        Ok(RegistryClient { base, http, auth })
    }

    /// The registry's address, as used in messages.
    pub fn url(&self) -> &Url {
        &self.base
    }

    /// `HEAD /v2/<repository>/manifests/<reference>` (a tag or a digest).
    pub async fn head_manifest(&self, repository: &str, reference: &str) -> Result<Head> {
        check_reference(reference)?;
        let resp = self
            .send(
                Method::HEAD,
                repository,
                &format!("manifests/{reference}"),
                &[Action::Pull],
                |r| r.header("Accept", MANIFEST_TYPES),
            )
            .await?;
        Ok(head(&resp))
    }

    /// `HEAD /v2/<repository>/blobs/<digest>`.
    pub async fn head_blob(&self, repository: &str, digest: &str) -> Result<Head> {
        check_reference(digest)?;
        let resp = self
            .send(
                Method::HEAD,
                repository,
                &format!("blobs/{digest}"),
                &[Action::Pull],
                |r| r,
            )
            .await?;
        Ok(head(&resp))
    }

    /// `GET /v2/<repository>/manifests/<reference>`: its media type and exact bytes (their
    /// sha256 is its digest); `None` if the registry has no such manifest.
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Manifest>> {
        check_reference(reference)?;
        let resp = self
            .send(
                Method::GET,
                repository,
                &format!("manifests/{reference}"),
                &[Action::Pull],
                |r| r.header("Accept", MANIFEST_TYPES),
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self.expect(resp, &[StatusCode::OK]).await?;
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let what = format!("{repository}:{reference} at {}", super::shown(&self.base));
        let bytes = read_capped(resp, MANIFEST_LIMIT, &what).await?;
        Ok(Some(Manifest {
            media_type,
            bytes: bytes.to_vec(),
        }))
    }

    /// `PUT /v2/<repository>/manifests/<reference>` (needs push).
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        m: &Manifest,
    ) -> Result<()> {
        check_reference(reference)?;
        let resp = self
            .send(
                Method::PUT,
                repository,
                &format!("manifests/{reference}"),
                PUSH,
                |r| {
                    r.header(CONTENT_TYPE, m.media_type.as_str())
                        .body(m.bytes.clone())
                },
            )
            .await?;
        self.expect(resp, &[StatusCode::CREATED]).await.map(drop)
    }

    /// Upload a blob in one piece: `POST /v2/<repository>/blobs/uploads/`, then `PUT` to the
    /// upload's location with `?digest=` (needs push). `body` makes the content for each
    /// attempt; the registry checks it against `digest`.
    pub async fn upload_blob(
        &self,
        repository: &str,
        digest: &str,
        body: impl Fn() -> reqwest::Body,
    ) -> Result<()> {
        match self.start_upload(repository, digest, None).await? {
            Upload::Mounted => Ok(()),
            Upload::Started(location) => {
                self.finish_upload(repository, location, digest, body).await
            }
        }
    }

    /// Start a blob upload to `repository`, asking the registry to mount `digest` from
    /// the repository `from` instead (`POST …/blobs/uploads/?mount=&from=`; the token asks
    /// for pull on `from` too). A registry that cannot mount (the blob is not there, or the
    /// account may not pull `from`) starts a plain upload instead, as the spec says.
    pub async fn start_upload(
        &self,
        repository: &str,
        digest: &str,
        from: Option<&str>,
    ) -> Result<Upload> {
        check_reference(digest)?;
        check_repository(repository)?;
        let mut url = self.endpoint(&format!("v2/{repository}/blobs/uploads/"))?;
        let mut scope = Scope::repository(repository, PUSH);
        if let Some(from) = from {
            check_repository(from)?;
            url.query_pairs_mut()
                .append_pair("mount", digest)
                .append_pair("from", from);
            scope = scope.and(&Scope::repository(from, &[Action::Pull]));
        }
        let resp = self
            .send_to(Method::POST, url, &scope, |r| r.header(CONTENT_LENGTH, 0))
            .await;
        let resp = match (resp, from) {
            // Refused the mount's pull on `from` (Harbor grants it per project): upload.
            (Err(Error::Key(_)), Some(_)) => {
                return Box::pin(self.start_upload(repository, digest, None)).await
            }
            (r, _) => r?,
        };
        if from.is_some() && resp.status() == StatusCode::CREATED {
            return Ok(Upload::Mounted);
        }
        let started = self.expect(resp, &[StatusCode::ACCEPTED]).await?;
        Ok(Upload::Started(self.upload_location(&started)?))
    }

    /// Finish an upload started at `location` with its whole content: `PUT ?digest=`.
    pub async fn finish_upload(
        &self,
        repository: &str,
        mut location: Url,
        digest: &str,
        body: impl Fn() -> reqwest::Body,
    ) -> Result<()> {
        check_reference(digest)?;
        location.query_pairs_mut().append_pair("digest", digest);
        let scope = Scope::repository(repository, PUSH);
        let done = self
            .send_to(Method::PUT, location, &scope, |r| {
                r.header(CONTENT_TYPE, "application/octet-stream")
                    .body(body())
            })
            .await?;
        self.expect(done, &[StatusCode::CREATED]).await.map(drop)
    }

    /// One request to `/v2/<repository>/<rest>` that needs `actions` on the repository; see
    /// [`RegistryClient::send_to`].
    pub async fn send(
        &self,
        method: Method,
        repository: &str,
        rest: &str,
        actions: &[Action],
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response> {
        check_repository(repository)?;
        let scope = Scope::repository(repository, actions);
        let url = self.endpoint(&format!("v2/{repository}/{rest}"))?;
        self.send_to(method, url, &scope, build).await
    }

    /// One request to `url` of this registry needing `scope`, authenticated up front when
    /// the registry's scheme is known, and retried once after a 401 with what its challenge
    /// asks for. `build` adds headers and body; it is called for every attempt. Any answer
    /// but a refusal is returned.
    pub async fn send_to(
        &self,
        method: Method,
        url: Url,
        scope: &Scope,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response> {
        if url.host() != self.base.host() {
            return Err(Error::Other(format!(
                "{url} is not on the registry at {}; drydock sends its credentials only there",
                super::shown(&self.base)
            )));
        }
        let mut auth = self.auth.authorization(scope).await?;
        let mut retried = false;
        loop {
            let mut req = build(self.http.request(method.clone(), url.clone()));
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a.header().clone());
            }
            let resp = req
                .send()
                .await
                .map_err(|e| self.transport_error(&url, &e))?;
            let status = resp.status();
            let refused = status == StatusCode::UNAUTHORIZED
                || (status == StatusCode::FORBIDDEN && auth.is_some());
            if !refused {
                return Ok(resp);
            }
            let scheme = challenge(&resp);
            // Learn and retry once: when nothing was presented, or a token was refused with
            // a Bearer challenge (expired, revoked). A token refused with another challenge
            // (Harbor then answers `Basic`) and refused credentials are final.
            let presented_token = auth.as_ref().is_some_and(|a| a.is_token());
            let bearer = matches!(scheme, Some(Scheme::Bearer { .. }));
            let learn = status == StatusCode::UNAUTHORIZED
                && !retried
                && (auth.is_none() || (presented_token && bearer));
            if !learn {
                let why = Refusal::of(auth.as_ref(), scheme.as_ref());
                return Err(self.auth.refused(why, status, &url, Some(scope)));
            }
            let scheme = scheme.ok_or_else(|| {
                Error::Other(format!(
                    "the registry at {} answered HTTP 401 for {url} without a Bearer or Basic challenge; is --registry-url a registry's address?",
                    super::shown(&self.base)
                ))
            })?;
            let next = self.auth.challenged(scope, scheme, auth.as_ref()).await?;
            if next.is_none() {
                // Basic auth wanted, and no credentials to give.
                return Err(self
                    .auth
                    .refused(Refusal::NoCredentials, status, &url, Some(scope)));
            }
            auth = next;
            retried = true;
        }
    }

    /// Where an upload goes on: its `Location`, relative to the registry, and on the
    /// registry's own host (the next request carries the token).
    fn upload_location(&self, resp: &Response) -> Result<Url> {
        let raw = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Error::Other(format!(
                    "the registry at {} started an upload without a Location",
                    super::shown(&self.base)
                ))
            })?;
        upload_target(&self.base, resp.url(), raw)
    }

    /// `resp` if its status is one of `ok`; otherwise an error with what the registry
    /// said (distribution's `{"errors": [{"code", "message"}]}`).
    async fn expect(&self, resp: Response, ok: &[StatusCode]) -> Result<Response> {
        if ok.contains(&resp.status()) {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let path = resp.url().path().to_string();
        let base = super::shown(&self.base);
        let what = format!("{path} at {base}");
        let body = read_capped(resp, ERROR_LIMIT, &what)
            .await
            .unwrap_or_default();
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let e = v.pointer("/errors/0")?;
                Some(format!(
                    ": {} {}",
                    e.get("code")?.as_str()?,
                    e.get("message").and_then(|m| m.as_str()).unwrap_or("")
                ))
            })
            .unwrap_or_default();
        Err(Error::Other(format!(
            "the registry at {base} answered HTTP {status} for {path}{}",
            crate::term::esc(detail.trim_end())
        )))
    }

    fn endpoint(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .map_err(|e| Error::Other(format!("bad registry path {path:?}: {e}")))
    }

    fn transport_error(&self, url: &Url, e: &reqwest::Error) -> Error {
        let detail = error_chain(e);
        if is_tls_error(e) {
            return Error::Key(format!(
                "TLS to the registry at {} failed: {detail}; give --registry-ca-cert FILE with the CA (PEM) that signed its certificate",
                super::shown(&self.base)
            ));
        }
        Error::Other(format!("cannot reach the registry at {url}: {detail}"))
    }
}

/// The scheme the answer's `WWW-Authenticate` headers ask for.
fn challenge(resp: &Response) -> Option<Scheme> {
    let challenges: Vec<_> = resp
        .headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect();
    Scheme::choose(&challenges)
}

fn head(resp: &Response) -> Head {
    Head {
        status: resp.status(),
        digest: resp
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    }
}

/// The registry's address with a trailing `/` (so paths join beneath it) and without
/// `/v2`; http(s) only, and https when a password goes to another machine unless allowed.
fn base_url(raw: &str, credentials: bool, allow_http: bool) -> Result<Url> {
    const OPTION: crate::net::UrlOption = crate::net::UrlOption {
        flag: "--registry-url",
        secret: "the registry password",
        ca_flag: "--registry-ca-cert",
        allow_flag: "--registry-allow-http",
    };
    let mut url = crate::net::service_url(raw, &OPTION, credentials, allow_http)?;
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/v2").unwrap_or(path).to_string();
    url.set_path(&format!("{path}/"));
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// An upload's `Location`, relative to the URL that answered it (`from`), if it stays on
/// the host of the registry at `base`, over http(s).
fn upload_target(base: &Url, from: &Url, location: &str) -> Result<Url> {
    let url = from.join(location).map_err(|e| {
        Error::Other(format!(
            "the registry's upload Location {location:?} is not a URL: {e}"
        ))
    })?;
    if url.host() != base.host() || !matches!(url.scheme(), "http" | "https") {
        return Err(Error::Other(format!(
            "the registry at {} sent the upload to {url}, another host; drydock sends its token only to the registry's own host",
            super::shown(base)
        )));
    }
    Ok(url)
}

/// A repository name as distribution accepts them: lower-case components of
/// `[a-z0-9._-]` separated by `/`, none empty or made of dots (so it cannot climb the path).
pub fn check_repository(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.split('/').all(|c| {
            !c.is_empty()
                && !c.chars().all(|ch| ch == '.')
                && c.chars()
                    .all(|ch| matches!(ch, 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
        });
    ok.then_some(())
        .ok_or_else(|| Error::Other(format!("{name:?} is not a registry repository name")))
}

/// A tag or a digest: `[A-Za-z0-9_.:-]`, not starting with `.` or `-`.
pub fn check_reference(r: &str) -> Result<()> {
    let ok = !r.is_empty()
        && !r.starts_with(['.', '-'])
        && r.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':'));
    ok.then_some(())
        .ok_or_else(|| Error::Other(format!("{r:?} is not a tag or digest")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let b = |u: &str| base_url(u, false, false).unwrap().to_string();
        assert_eq!(b("http://registry:5000"), "http://registry:5000/");
        assert_eq!(b("https://h/v2/"), "https://h/");
        assert_eq!(b("https://h/prefix/v2"), "https://h/prefix/");
        assert!(base_url("ftp://h", false, false).is_err());
        assert!(base_url("http://registry:5000", true, false).is_err());
        assert!(base_url("http://registry:5000", true, true).is_ok());
        assert!(base_url("http://127.0.0.1:5000", true, false).is_ok());
    }

    #[test]
    fn uploads_stay_on_the_registry_host() {
        let base = Url::parse("https://harbor.example.com/").unwrap();
        let from = base.join("v2/library/app/blobs/uploads/").unwrap();
        let t = |l: &str| upload_target(&base, &from, l);
        assert_eq!(
            t("/v2/library/app/blobs/uploads/u-1?_state=x")
                .unwrap()
                .as_str(),
            "https://harbor.example.com/v2/library/app/blobs/uploads/u-1?_state=x"
        );
        assert!(t("https://harbor.example.com:8443/v2/x/blobs/uploads/u").is_ok());
        for bad in [
            "https://evil.example.net/u",
            "//evil.example.net/u",
            "file:///etc/passwd",
        ] {
            let e = t(bad).unwrap_err().to_string();
            assert!(e.contains("another host"), "{bad}: {e}");
        }
    }

    #[test]
    fn names_cannot_climb() {
        assert!(check_repository("library/app-a").is_ok());
        assert!(check_repository("team/sub/app_b.x").is_ok());
        for bad in ["", "a//b", "../x", "a/..", "A", "a?b", "a/b/", "%2e%2e"] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
        assert!(check_reference("sha256:abcd").is_ok());
        assert!(check_reference("v1.2").is_ok());
        for bad in ["", "..", "-x", "a/b", "a?b"] {
            assert!(check_reference(bad).is_err(), "{bad}");
        }
    }
}
