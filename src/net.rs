//! Which URLs send data in the clear across a network: plain `http://` to a host that is
//! not this machine. Credentials must not go there by default (Harbor's admin password),
//! and data should not (an S3 endpoint).

use url::{Host, Url};

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
