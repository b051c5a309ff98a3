//! A Docker token server for the real registry's `auth: token`, as Harbor's core is one:
//! it checks basic credentials and issues RS256 JWTs whose `x5c` header carries the signing
//! certificate, chained to the registry's `rootcertbundle`. Anonymous requests get a token
//! that grants nothing, as Harbor gives for a private project.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::json;

pub const SERVICE: &str = "drydock-test-registry";
pub const ISSUER: &str = "drydock-test-token-issuer";

/// One request the server answered.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The `Authorization` header, verbatim.
    pub authorization: Option<String>,
    pub query: String,
    /// The token it issued, if any.
    pub token: Option<String>,
}

pub struct TokenServer {
    pub port: u16,
    /// The CA the registry trusts for tokens (`rootcertbundle`).
    pub root_cert: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
}

struct Signer {
    key: PathBuf,
    x5c: String,
    users: HashMap<String, String>,
    /// Users whose tokens grant nothing, as Harbor's for an account without access.
    no_access: Vec<String>,
}

impl TokenServer {
    /// Serve tokens on a free loopback port for `users` (name, password), with keys in `dir`;
    /// the tokens of `no_access` users grant nothing.
    pub fn start(dir: &Path, users: &[(&str, &str)], no_access: &[&str]) -> Self {
        let dir = dir.join("token-pki");
        std::fs::create_dir_all(&dir).unwrap();
        let pki = super::tls::make_pki(&dir, "drydock token CA", "DNS:token.localhost");
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&pki.server_cert)
            .output()
            .expect("openssl");
        assert!(der.status.success());
        let signer = Arc::new(Signer {
            key: pki.server_key.clone(),
            x5c: STANDARD.encode(&der.stdout),
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            no_access: no_access.iter().map(|u| u.to_string()).collect(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        // Serves until the test process ends; one connection at a time is plenty.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some(s) = serve(stream, &signer) {
                    log.lock().unwrap().push(s);
                }
            }
        });
        TokenServer {
            port,
            root_cert: pki.ca_cert,
            seen,
        }
    }

    /// The realm URL on `host` (127.0.0.1 for the registry's own host).
    pub fn realm(&self, host: &str) -> String {
        format!("http://{host}:{}/service/token", self.port)
    }

    /// The registry's `auth:` section, with the realm on `host`.
    pub fn registry_auth(&self, host: &str) -> String {
        token_auth_section(&self.realm(host), &self.root_cert)
    }

    /// Every request answered so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The request line's target and the `Authorization` header of one request.
fn read_request(stream: &TcpStream) -> Option<(String, Option<String>)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let target = line.split_whitespace().nth(1)?.to_string();
    let mut authorization = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            }
        }
    }
    Some((target, authorization))
}

fn respond(mut stream: TcpStream, head: &str, body: &[u8]) {
    let _ = write!(
        stream,
        "HTTP/1.1 {head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

/// Answer one request: a token for good or no credentials, 401 for bad ones.
fn serve(stream: TcpStream, signer: &Signer) -> Option<Seen> {
    let (target, authorization) = read_request(&stream)?;
    let query = target
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .to_string();
    let user = match authorization.as_deref() {
        None => Some(None),
        Some(a) => signer.check(a).map(Some),
    };
    let (status, body, token) = match user {
        None => (
            "401 Unauthorized",
            json!({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}),
            None,
        ),
        Some(user) => {
            let token = signer.token(user.as_deref(), &query);
            (
                "200 OK",
                json!({"token": token, "expires_in": 300}),
                Some(token),
            )
        }
    };
    respond(
        stream,
        &format!("{status}\r\nContent-Type: application/json"),
        body.to_string().as_bytes(),
    );
    Some(Seen {
        authorization,
        query,
        token,
    })
}

/// A server on a free loopback port answering every request with `head` (status line
/// rest and extra headers) and `body`; the number of requests it got.
pub fn fixed_server(head: String, body: Vec<u8>) -> (u16, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(Mutex::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if read_request(&stream).is_some() {
                *seen.lock().unwrap() += 1;
                respond(stream, &head, &body);
            }
        }
    });
    (port, count)
}

/// A registry `auth: token` section whose realm is `realm`, trusting `root_cert`.
pub fn token_auth_section(realm: &str, root_cert: &Path) -> String {
    format!(
        "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        root_cert.display()
    )
}

impl Signer {
    /// The user whose basic credentials `header` carries, if they are right.
    fn check(&self, header: &str) -> Option<String> {
        let b64 = header.strip_prefix("Basic ")?;
        let plain = String::from_utf8(STANDARD.decode(b64).ok()?).ok()?;
        let (u, p) = plain.split_once(':')?;
        (self.users.get(u)? == p).then(|| u.to_string())
    }

    /// A signed JWT granting `user` what the query's scopes ask (nothing when anonymous).
    fn token(&self, user: Option<&str>, query: &str) -> String {
        let mut access = Vec::new();
        let granted = user.is_some_and(|u| !self.no_access.iter().any(|n| n == u));
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let mut parts = v.splitn(3, ':');
            if let (Some(kind), Some(name), Some(actions), true, true) = (
                parts.next(),
                parts.next(),
                parts.next(),
                k == "scope",
                granted,
            ) {
                let actions: Vec<&str> = actions.split(',').collect();
                access.push(json!({"type": kind, "name": name, "actions": actions}));
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        // distribution 2.8 wants `aud` as one string, not an array.
        let claims = json!({
            "iss": ISSUER,
            "sub": user.unwrap_or(""),
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 1,
            "iat": now,
            "jti": format!("{now}-{}", rand_id()),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(self.sign(input.as_bytes()))
        )
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 (RS256), by the openssl CLI.
    fn sign(&self, data: &[u8]) -> Vec<u8> {
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-binary", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("openssl");
        child.stdin.take().unwrap().write_all(data).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "openssl dgst -sign failed");
        out.stdout
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
