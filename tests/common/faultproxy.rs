//! A fault-injecting HTTP/1.1 proxy in front of the S3 server, for the reliability tests.
//!
//! Every request is read in full and then, on a configurable share of requests, answered with
//! a fault instead of (or on top of) being forwarded:
//!
//! - `InternalError`: `500` with an S3 `<Error><Code>InternalError</Code>…` body, not forwarded;
//! - `SlowDown`: `503` with an S3 `SlowDown` body, not forwarded;
//! - `Reset`: the connection is reset (`SO_LINGER 0`, so the client sees RST), not forwarded;
//! - `ResetMidBody` (`GET` only): forwarded; the response headers and half of its body are
//!   sent, then the connection is reset (a response without 2 bytes of body to cut becomes a
//!   `ResponseLost`);
//! - `ResponseLost`: forwarded (the server applied it: a write is done), then the connection
//!   is reset before any byte of the response;
//! - `Delay`: 50–300 ms, then forwarded correctly.
//!
//! Everything else is forwarded byte for byte, except the hop-by-hop parts: Content-Length and
//! chunked bodies both ways; keep-alive (several requests on one client connection, each sent
//! upstream on a fresh connection whose `Connection` response header is dropped, so the client
//! keeps its connection as with a real S3 endpoint, where moto would close every one);
//! `Expect: 100-continue` (answered here; the header is not forwarded).
//!
//! Which requests get a fault is drawn from a seeded generator: the seed is fixed, printed,
//! and can be set with `DRYDOCK_TEST_SEED`. Which fault a request gets is the applicable kind
//! injected least so far (ties drawn from the generator), so every kind shows up in a run
//! with a few dozen faults. Requests from concurrent connections arrive in a scheduling-dependent order,
//! so a seed fixes the sequence of draws, not which object each draw lands on.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Rng;

/// What the proxy did to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    InternalError,
    SlowDown,
    Reset,
    ResetMidBody,
    ResponseLost,
    Delay,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::InternalError,
        Fault::SlowDown,
        Fault::Reset,
        Fault::ResetMidBody,
        Fault::ResponseLost,
        Fault::Delay,
    ];
    /// The kinds that make a request fail (all but `Delay`).
    pub const FAILING: [Fault; 5] = [
        Fault::InternalError,
        Fault::SlowDown,
        Fault::Reset,
        Fault::ResetMidBody,
        Fault::ResponseLost,
    ];

    fn index(self) -> usize {
        Fault::ALL.iter().position(|k| *k == self).unwrap()
    }
}

/// Requests seen and faults injected so far.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub requests: u64,
    pub faults: [u64; 6],
}

impl Counts {
    pub fn of(&self, kind: Fault) -> u64 {
        self.faults[kind.index()]
    }

    pub fn total_faults(&self) -> u64 {
        self.faults.iter().sum()
    }

    /// What happened since `earlier`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut out = self.clone();
        out.requests -= earlier.requests;
        for (o, e) in out.faults.iter_mut().zip(earlier.faults) {
            *o -= e;
        }
        out
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} requests", self.requests)?;
        for k in Fault::ALL {
            write!(f, ", {k:?} {}", self.of(k))?;
        }
        Ok(())
    }
}

struct Shared {
    upstream: String,
    /// The share of requests to fault, as f64 bits.
    share: AtomicU64,
    /// Only requests with one of these methods are faulted (empty: any method).
    methods: Mutex<Vec<String>>,
    /// Only requests whose target contains one of these are faulted (empty: any target).
    paths: Mutex<Vec<String>>,
    /// Requests of those methods seen so far; only those numbered in
    /// `from_request..until_request` are faulted.
    matched: AtomicU64,
    from_request: AtomicU64,
    until_request: AtomicU64,
    /// Bit set of the kinds allowed (by `Fault::index`).
    allowed: AtomicU64,
    rng: Mutex<Rng>,
    requests: AtomicU64,
    faults: [AtomicU64; 6],
    stop: AtomicBool,
    /// Every request head, in arrival order: what went over the wire.
    seen: Mutex<Vec<Seen>>,
}

/// One request as the proxy received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// A header's value (names compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Shared {
    fn count(&self, kind: Fault) {
        self.faults[kind.index()].fetch_add(1, Ordering::SeqCst);
    }

    fn injected(&self, kind: Fault) -> u64 {
        self.faults[kind.index()].load(Ordering::SeqCst)
    }

    /// Draw the fault (if any) for a `method` request of `target`.
    fn decide(&self, method: &str, target: &str) -> Option<Fault> {
        let share = f64::from_bits(self.share.load(Ordering::SeqCst));
        let allowed = self.allowed.load(Ordering::SeqCst);
        let mut rng = self.rng.lock().unwrap();
        let draw = rng.unit();
        {
            let methods = self.methods.lock().unwrap();
            if !methods.is_empty() && !methods.iter().any(|m| m == method) {
                return None;
            }
            let paths = self.paths.lock().unwrap();
            if !paths.is_empty() && !paths.iter().any(|p| target.contains(p.as_str())) {
                return None;
            }
        }
        let n = self.matched.fetch_add(1, Ordering::SeqCst);
        let window =
            self.from_request.load(Ordering::SeqCst)..self.until_request.load(Ordering::SeqCst);
        if !window.contains(&n) || draw >= share {
            return None;
        }
        let candidates: Vec<Fault> = Fault::ALL
            .into_iter()
            .filter(|k| allowed & (1 << k.index()) != 0)
            .filter(|k| *k != Fault::ResetMidBody || method == "GET")
            .collect();
        let least = candidates.iter().map(|k| self.injected(*k)).min()?;
        let lowest: Vec<Fault> = candidates
            .into_iter()
            .filter(|k| self.injected(*k) == least)
            .collect();
        Some(lowest[(rng.next() % lowest.len() as u64) as usize])
    }
}

/// The seed: `DRYDOCK_TEST_SEED`, or a fixed one (so a run is repeatable, as in
/// tests/crash.rs); printed either way.
pub fn seed() -> u64 {
    let seed = std::env::var("DRYDOCK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_fa17);
    println!("fault proxy seed {seed} (set DRYDOCK_TEST_SEED to replay or vary the draws)");
    seed
}

pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, for `--s3-endpoint`.
    pub url: String,
    shared: Arc<Shared>,
    port: u16,
}

impl FaultProxy {
    /// A proxy in front of `common::s3_endpoint()`, faulting `share` of the requests.
    pub fn start(share: f64, seed: u64) -> FaultProxy {
        let upstream = super::s3_endpoint();
        let upstream = upstream
            .strip_prefix("http://")
            .expect("the fault proxy speaks plain HTTP to the S3 server")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream,
            share: AtomicU64::new(share.to_bits()),
            methods: Mutex::new(Vec::new()),
            paths: Mutex::new(Vec::new()),
            matched: AtomicU64::new(0),
            from_request: AtomicU64::new(0),
            until_request: AtomicU64::new(u64::MAX),
            allowed: AtomicU64::new((1 << Fault::ALL.len()) - 1),
            rng: Mutex::new(Rng(seed)),
            requests: AtomicU64::new(0),
            faults: Default::default(),
            stop: AtomicBool::new(false),
            seen: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let s = s.clone();
                    std::thread::spawn(move || serve(conn, &s));
                }
            })
            .unwrap();
        FaultProxy {
            url: format!("http://127.0.0.1:{port}"),
            shared,
            port,
        }
    }

    /// Fault `share` (0.0 to 1.0) of the requests from now on.
    pub fn set_share(&self, share: f64) {
        self.set_share_from(0, share);
    }

    /// Let the next `after` requests (of the methods set with `set_methods`) through, then
    /// fault `share` of them: a command that fails part-way through, not at its first request.
    pub fn set_share_from(&self, after: u64, share: f64) {
        self.set_window(after, u64::MAX, share);
    }

    /// Let the next `after` requests (of the methods set with `set_methods`) through, then
    /// fault `share` of the `count` requests after them, then none.
    pub fn set_window(&self, after: u64, count: u64, share: f64) {
        let sh = &self.shared;
        sh.share.store(0f64.to_bits(), Ordering::SeqCst);
        let from = sh.matched.load(Ordering::SeqCst).saturating_add(after);
        sh.from_request.store(from, Ordering::SeqCst);
        sh.until_request
            .store(from.saturating_add(count), Ordering::SeqCst);
        sh.share.store(share.to_bits(), Ordering::SeqCst);
    }

    /// Only fault requests with one of these methods (`GET`, `PUT`…; empty: any method).
    /// Call before `set_share*`: their request counts are of these methods.
    pub fn set_methods(&self, methods: &[&str]) {
        *self.shared.methods.lock().unwrap() = methods.iter().map(|m| m.to_string()).collect();
    }

    /// Only fault requests whose target (path and query) contains one of these (empty: any).
    /// Call before `set_share*`, like `set_methods`.
    pub fn set_paths(&self, paths: &[&str]) {
        *self.shared.paths.lock().unwrap() = paths.iter().map(|p| p.to_string()).collect();
    }

    /// Only inject these kinds (none: no faults at all).
    pub fn set_kinds(&self, kinds: &[Fault]) {
        let bits = kinds.iter().fold(0u64, |b, k| b | 1 << k.index());
        self.shared.allowed.store(bits, Ordering::SeqCst);
    }

    /// The requests received so far, and forget them.
    pub fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.shared.seen.lock().unwrap())
    }

    /// Every request so far, as `(method, target)`, in arrival order.
    pub fn requests(&self) -> Vec<(String, String)> {
        let seen = self.shared.seen.lock().unwrap();
        seen.iter()
            .map(|s| (s.method.clone(), s.target.clone()))
            .collect()
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            requests: self.shared.requests.load(Ordering::SeqCst),
            ..Default::default()
        };
        for (o, a) in c.faults.iter_mut().zip(&self.shared.faults) {
            *o = a.load(Ordering::SeqCst);
        }
        c
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

// ---------------------------------------------------------------- HTTP/1.1

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A message head: the raw bytes, the start line and the headers.
pub struct Head {
    pub raw: Vec<u8>,
    pub start: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The body framing of a request, or of a response (`req_method`, `status`).
    fn framing(&self, response: Option<(&str, u16)>) -> io::Result<Framing> {
        if let Some((method, status)) = response {
            if method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304 {
                return Ok(Framing::None);
            }
        }
        if self.has_token("transfer-encoding", "chunked") {
            return Ok(Framing::Chunked);
        }
        match self.header("content-length") {
            Some(v) => v
                .trim()
                .parse()
                .map(Framing::Length)
                .map_err(|_| io::Error::other(format!("bad Content-Length {v:?}"))),
            None if response.is_some() => Ok(Framing::UntilClose),
            None => Ok(Framing::None),
        }
    }
}

/// Read one message head; `None` at a clean end of stream before any byte.
pub fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    loop {
        let before = raw.len();
        let n = r.read_until(b'\n', &mut raw)?;
        if n == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if raw.len() > 64 * 1024 {
            return Err(io::Error::other("message head over 64 KiB"));
        }
        let line = &raw[before..];
        if line == b"\r\n" || line == b"\n" {
            if before == 0 {
                // Tolerate a stray empty line between messages.
                raw.clear();
                continue;
            }
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
    let start = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Some(Head {
        raw,
        start,
        headers,
    }))
}

/// Read a response to a `method` request from `r`: its head and raw body.
pub fn read_response(r: &mut impl BufRead, method: &str) -> io::Result<(Head, Vec<u8>)> {
    let head = read_head(r)?.ok_or(io::ErrorKind::UnexpectedEof)?;
    let status = head
        .start
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = read_body(r, head.framing(Some((method, status)))?)?;
    Ok((head, body))
}

/// Read a body with its framing, raw (chunk sizes and trailers included).
fn read_body(r: &mut impl BufRead, framing: Framing) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            r.take(n).read_to_end(&mut out)?;
            if out.len() as u64 != n {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Framing::UntilClose => {
            r.read_to_end(&mut out)?;
        }
        Framing::Chunked => loop {
            let start = out.len();
            if r.read_until(b'\n', &mut out)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let line = String::from_utf8_lossy(&out[start..]).into_owned();
            let size = line.trim().split(';').next().unwrap_or_default();
            let size = u64::from_str_radix(size.trim(), 16)
                .map_err(|_| io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let s = out.len();
                    if r.read_until(b'\n', &mut out)? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    if &out[s..] == b"\r\n" || &out[s..] == b"\n" {
                        return Ok(out);
                    }
                }
            }
            let want = size + 2; // data and its CRLF
            let got = r.take(want).read_to_end(&mut out)?;
            if got as u64 != want {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        },
    }
    Ok(out)
}

/// Reset the connection: the peer sees RST, not FIN.
fn reset(conn: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    // The caller drops every handle of the socket next; close() then sends the RST.
}

fn s3_error(status: u16, reason: &str, code: &str, message: &str, head_only: bool) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>FAULTPROXY</RequestId><HostId>faultproxy</HostId></Error>"
    );
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-amz-request-id: FAULTPROXY\r\nServer: faultproxy\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Serve one client connection until it closes, or a fault closes it.
fn serve(client: TcpStream, shared: &Shared) {
    let _ = client.set_nodelay(true);
    let Ok(read_half) = client.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(256 * 1024, read_half);
    let mut writer = &client;
    loop {
        let head = match read_head(&mut reader) {
            Ok(Some(h)) => h,
            _ => return,
        };
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let mut start = head.start.split(' ');
        let method = start.next().unwrap_or_default().to_string();
        let target = start.next().unwrap_or_default().to_string();
        shared.seen.lock().unwrap().push(Seen {
            method: method.clone(),
            target: target.clone(),
            headers: head.headers.clone(),
        });
        let Ok(framing) = head.framing(None) else {
            return;
        };
        // The SDK may wait for `100 Continue` before it sends the body: answer it here and
        // forward without the header (upstream then sends no interim response).
        let mut forward_head = head.raw.clone();
        if head.has_token("expect", "100-continue") {
            if writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                return;
            }
            forward_head = strip_header(&head.raw, "expect");
        }
        let Ok(body) = read_body(&mut reader, framing) else {
            return;
        };
        let close_after = head.has_token("connection", "close") || head.start.ends_with("1.0");
        let choice = shared.decide(&method, &target);
        let head_only = method == "HEAD";
        match choice {
            Some(Fault::InternalError) => {
                shared.count(Fault::InternalError);
                let r = s3_error(
                    500,
                    "Internal Server Error",
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                    head_only,
                );
                if writer.write_all(&r).is_err() || close_after {
                    return;
                }
                continue;
            }
            Some(Fault::SlowDown) => {
                shared.count(Fault::SlowDown);
                let r = s3_error(
                    503,
                    "Slow Down",
                    "SlowDown",
                    "Please reduce your request rate.",
                    head_only,
                );
                if writer.write_all(&r).is_err() || close_after {
                    return;
                }
                continue;
            }
            Some(Fault::Reset) => {
                shared.count(Fault::Reset);
                reset(&client);
                return;
            }
            Some(Fault::Delay) => {
                shared.count(Fault::Delay);
                let ms = 50 + shared.rng.lock().unwrap().next() % 251;
                std::thread::sleep(Duration::from_millis(ms));
            }
            Some(Fault::ResetMidBody | Fault::ResponseLost) | None => {}
        }
        let cut = choice.filter(|k| matches!(k, Fault::ResetMidBody | Fault::ResponseLost));
        match forward(shared, &method, &forward_head, &body, writer, cut) {
            Ok(Forwarded::KeepAlive) if !close_after => continue,
            Ok(Forwarded::Reset) => {
                reset(&client);
                return;
            }
            Ok(_) => {
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Err(_) => {
                // Upstream broke: the client sees the connection close.
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

fn strip_header(raw: &[u8], name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for line in raw.split_inclusive(|b| *b == b'\n') {
        let text = String::from_utf8_lossy(line);
        let is_it = text
            .split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(name));
        if !is_it {
            out.extend_from_slice(line);
        }
    }
    out
}

enum Forwarded {
    KeepAlive,
    Close,
    /// The caller must reset the client connection.
    Reset,
}

/// Send one request upstream on a fresh connection and relay the response. With `cut`, relay
/// the head and half of the body (`ResetMidBody`, if the response has a body of 2 bytes or
/// more) or nothing (`ResponseLost`), and ask for a reset.
fn forward(
    shared: &Shared,
    method: &str,
    head: &[u8],
    body: &[u8],
    mut client: &TcpStream,
    cut: Option<Fault>,
) -> io::Result<Forwarded> {
    let mut up = TcpStream::connect(&shared.upstream)?;
    up.set_nodelay(true)?;
    up.write_all(head)?;
    up.write_all(body)?;
    let mut r = BufReader::with_capacity(256 * 1024, up.try_clone()?);
    let resp = loop {
        let h = read_head(&mut r)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        let status: u16 = h
            .start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            // An interim response: pass it on, read the real one.
            client.write_all(&h.raw)?;
            continue;
        }
        break (h, status);
    };
    let (h, status) = resp;
    let framing = h.framing(Some((method, status)))?;
    // `Connection` is hop-by-hop: the upstream connection is this request's alone (moto
    // closes every one), the client's stays open as with a real S3 endpoint.
    let raw = strip_header(&h.raw, "connection");
    if let Some(kind) = cut {
        if let (Fault::ResetMidBody, Framing::Length(len)) = (kind, framing) {
            if len >= 2 {
                shared.count(Fault::ResetMidBody);
                client.write_all(&raw)?;
                let half = len / 2;
                let copied = io::copy(&mut (&mut r).take(half), &mut client)?;
                if copied != half {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                client.flush()?;
                return Ok(Forwarded::Reset);
            }
        }
        // Let the server finish (it has applied the request), then lose the response.
        read_body(&mut r, framing)?;
        shared.count(Fault::ResponseLost);
        return Ok(Forwarded::Reset);
    }
    client.write_all(&raw)?;
    match framing {
        Framing::None => {}
        Framing::Length(len) => {
            let copied = io::copy(&mut (&mut r).take(len), &mut client)?;
            if copied != len {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Framing::Chunked => {
            let raw = read_body(&mut r, Framing::Chunked)?;
            client.write_all(&raw)?;
        }
        Framing::UntilClose => {
            io::copy(&mut r, &mut client)?;
            return Ok(Forwarded::Close);
        }
    }
    client.flush()?;
    if h.start.starts_with("HTTP/1.0") {
        return Ok(Forwarded::Close);
    }
    Ok(Forwarded::KeepAlive)
}

// ---------------------------------------------------------------- repositories

/// An S3 repository in a new bucket, every request of every command going through `proxy`.
/// `init` runs through the proxy too, at whatever share is set, with drydock's default 8 S3
/// attempts.
pub fn proxied_s3_repo(dir: &std::path::Path, prefix: &str, proxy: &FaultProxy) -> super::Repo {
    proxied_s3_repo_with(dir, prefix, proxy, &[])
}

/// [`proxied_s3_repo`], `init` given `init_args` too (`--storage-class GLACIER`).
pub fn proxied_s3_repo_with(
    dir: &std::path::Path,
    prefix: &str,
    proxy: &FaultProxy,
    init_args: &[&str],
) -> super::Repo {
    let bucket = super::new_bucket();
    let args = vec![
        "--repo".to_string(),
        format!("s3://{bucket}/{prefix}"),
        "--s3-endpoint".to_string(),
        proxy.url.clone(),
        "--s3-path-style".to_string(),
    ];
    let (identity, backup_key) =
        super::init_with(&args, init_args, dir, &[("DRYDOCK_S3_MAX_ATTEMPTS", "8")]);
    super::Repo {
        args,
        identity,
        backup_key,
        local_root: None,
        s3: Some((super::s3_endpoint(), bucket)),
    }
}
