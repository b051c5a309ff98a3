//! A client for the OCI distribution API (`/v2/`, the Docker registry API that Harbor and
//! CNCF distribution serve), with the authentication registries ask for: the Docker token
//! flow (Harbor, distribution's `auth: token`) and basic auth (`auth: htpasswd`).
//!
//! - [`auth`]: challenges, credentials, scopes, tokens, and where credentials may go.
//! - [`client`]: requests — HEAD of manifests and blobs (what `verify --registry-url`
//!   uses), GET and PUT of manifests, one-piece blob uploads and cross-repository mounts; [`RegistryClient::send`]
//!   takes any method and scope for what comes next (streamed and mounted uploads).

pub mod auth;
pub mod client;

pub use auth::{Action, Credentials, Scope};
pub use client::{
    check_reference, check_repository, ClientOptions, Head, Manifest, RegistryClient, Upload,
};

use url::Url;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A registry's address as messages show it: without the `/` that paths are joined to.
pub(crate) fn shown(url: &Url) -> &str {
    url.as_str().trim_end_matches('/')
}

/// A response body, read whole but refused past `limit` bytes (a hostile server could
/// send without end); `what` names it in the error. Wiped when dropped: it may be a token.
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<Zeroizing<Vec<u8>>> {
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Error::Other(format!("reading the answer of {what}: {e}")))?
    {
        if body.len() + chunk.len() > limit {
            return Err(Error::Other(format!(
                "{what} answered more than {limit} bytes; refusing to read on"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
