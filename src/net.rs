//! Which URLs send data in the clear across a network: plain `http://` to a host that is
//! not this machine. Credentials must not go there by default (Harbor's admin password),
//! and data should not (an S3 endpoint). Also the HTTP client set-up and error reading that
//! drydock's HTTP clients (Harbor's API, the registry's) share.

use std::path::Path;

use url::{Host, Url};

use crate::error::{Error, Result};

/// Whether `url` names this machine: 127.0.0.0/8, ::1 (or an IPv4-mapped loopback) or
/// `localhost` (RFC 6761, also `*.localhost`).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Some(Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        None => false,
    }
}

/// Whether `url` is plain `http://` to another machine.
pub fn is_cleartext_remote(url: &Url) -> bool {
    url.scheme() == "http" && !is_loopback(url)
}

/// The options around one service's address, for the messages that name them.
pub struct UrlOption {
    /// The option holding the address, e.g. `--harbor-url`.
    pub flag: &'static str,
    /// What goes with each request, e.g. `the Harbor password`.
    pub secret: &'static str,
    /// The option trusting a private CA, and the one allowing plain http.
    pub ca_flag: &'static str,
    pub allow_flag: &'static str,
}

/// `raw` as an http(s) URL with a host. With a password on every request, plain http to
/// another machine is refused unless `allow_http`: Harbor's API and the registry's share
/// this rule, and it is decided in one place.
pub fn service_url(raw: &str, opt: &UrlOption, secret: bool, allow_http: bool) -> Result<Url> {
    let bad = |why: &str| {
        Error::Usage(format!(
            "{} {raw:?}: {why}; want an address like https://harbor.example.com",
            opt.flag
        ))
    };
    let url = Url::parse(raw.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("not an http:// or https:// URL"));
    }
    if secret && is_cleartext_remote(&url) && !allow_http {
        return Err(Error::Usage(format!(
            "{} {raw:?} would send {} unencrypted: use https:// (with {} for a private CA), or pass {} if the network path is protected otherwise",
            opt.flag, opt.secret, opt.ca_flag, opt.allow_flag
        )));
    }
    Ok(url)
}

/// A reqwest client builder trusting the system roots (rustls-native-certs honours
/// SSL_CERT_FILE / SSL_CERT_DIR, so a CA installed on the machine needs no option) and the
/// PEM certificates in `ca`, which the option `flag` named.
pub fn http_client_builder(ca: Option<&Path>, flag: &str) -> Result<reqwest::ClientBuilder> {
    let mut builder =
        reqwest::Client::builder().user_agent(concat!("drydock/", env!("CARGO_PKG_VERSION")));
    for c in system_roots() {
        builder = builder.add_root_certificate(c);
    }
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|e| {
            Error::Usage(format!(
                "{flag} {}: {e}; give a PEM file with the CA certificate",
                ca.display()
            ))
        })?;
        let certs = pem_certificates(&pem).ok_or_else(|| {
            Error::Usage(format!("{flag} {}: no PEM certificate in it", ca.display()))
        })?;
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    Ok(builder)
}

/// The machine's trusted roots, as rustls-native-certs finds them.
pub fn system_roots() -> Vec<reqwest::Certificate> {
    rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .filter_map(|der| reqwest::Certificate::from_der(der.as_ref()).ok())
        .collect()
}

/// The certificates of a PEM bundle; `None` if it holds none.
pub fn pem_certificates(pem: &[u8]) -> Option<Vec<reqwest::Certificate>> {
    reqwest::Certificate::from_pem_bundle(pem)
        .ok()
        .filter(|c| !c.is_empty())
}

/// The innermost causes, which say what actually went wrong (refused, unknown issuer…).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = s.source();
    }
    // The outer layers repeat the inner ones; the last two say it best.
    let start = parts.len().saturating_sub(2);
    let inner = parts[start..].join(": ");
    if inner.is_empty() {
        e.to_string()
    } else {
        inner
    }
}

/// Whether a request failed in TLS (certificate or handshake), not in transport.
pub fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = cur {
        // hyper-rustls wraps rustls errors in io::Error, whose source() skips them.
        let io_inner = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
        if io_inner || s.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        let msg = s.to_string().to_ascii_lowercase();
        if msg.contains("certificate") || msg.contains("handshake") {
            return true;
        }
        cur = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(s: &str) -> bool {
        is_cleartext_remote(&Url::parse(s).unwrap())
    }

    #[test]
    fn loopback_and_https_are_not_cleartext_remote() {
        for s in [
            "http://127.0.0.1:8080",
            "http://127.9.8.7",
            "http://[::1]:9000",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost",
            "http://LOCALHOST.:80",
            "http://minio.localhost:9000",
            "https://harbor.example.com",
            "https://10.0.0.1",
        ] {
            assert!(!remote(s), "{s}");
        }
        for s in [
            "http://harbor-core",
            "http://10.0.0.1",
            "http://[::2]",
            "http://localhost.example.com",
            "http://128.0.0.1",
            "HTTP://minio.svc:9000",
        ] {
            assert!(remote(s), "{s}");
        }
    }
}
