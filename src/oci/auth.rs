//! How a registry wants to be authenticated, and the credentials and tokens that do it:
//! `WWW-Authenticate` challenges (RFC 7235), the Docker token flow (a `Bearer` challenge
//! names a realm that trades basic credentials for a token per scope, as Harbor and
//! distribution's `auth: token` do), and plain basic auth (distribution's `auth: htpasswd`).
//!
//! Credentials go only where they belong: to the registry itself, or to a token realm on the
//! registry's own host, over http(s), and never in clear text to another machine unless
//! allowed. A hostile registry cannot redirect them to a server of its choosing.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::HeaderValue;
use reqwest::StatusCode;
use url::Url;
use zeroize::Zeroizing;

use super::{read_capped, shown};
use crate::error::{Error, Result};
use crate::secret::Password;

/// Largest token response read: a JWT with a certificate chain is a few KiB.
const TOKEN_RESPONSE_LIMIT: usize = 1 << 20;
/// How long a token lasts when the response does not say (the token spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// What a token lets its holder do with a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Pull,
    Push,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
        }
    }
}

/// A token scope, `repository:<name>:<action>[,<action>]` in the token spec's grammar.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope(String);

impl Scope {
    pub fn repository(name: &str, actions: &[Action]) -> Self {
        let actions: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
        Scope(format!("repository:{name}:{}", actions.join(",")))
    }

    /// Both scopes in one token request (the token spec separates them by spaces), as a
    /// cross-repository mount needs: push on the target, pull on the source.
    pub fn and(&self, other: &Scope) -> Self {
        Scope(format!("{} {}", self.0, other.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user of the registry: a Harbor robot account (`robot$name`), a Harbor user, or an
/// htpasswd entry. `Debug` shows the name only.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Password,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({:?}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// `Basic base64(user:password)`, marked sensitive so no HTTP layer logs it.
    fn basic(&self) -> Result<Authorization> {
        let plain = Zeroizing::new(format!("{}:{}", self.username, self.password.expose()));
        let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*plain));
        Authorization::new("Basic", &encoded, false)
    }
}

/// An `Authorization` header value: basic credentials, or a bearer token.
#[derive(Clone)]
pub struct Authorization {
    value: HeaderValue,
    token: bool,
}

impl Authorization {
    fn new(scheme: &str, secret: &str, token: bool) -> Result<Self> {
        let text = Zeroizing::new(format!("{scheme} {secret}"));
        let mut v = HeaderValue::from_str(&text).map_err(|_| {
            Error::Key(format!(
                "the {scheme} credentials hold characters an HTTP header cannot carry"
            ))
        })?;
        v.set_sensitive(true);
        Ok(Authorization { value: v, token })
    }

    pub fn header(&self) -> &HeaderValue {
        &self.value
    }

    /// A bearer token (from a realm), not the credentials themselves.
    pub fn is_token(&self) -> bool {
        self.token
    }
}

/// One challenge of a `WWW-Authenticate` header: the scheme (lower case) and its
/// parameters (names in lower case, values unquoted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// A cursor over a header value.
struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn skip_while(&mut self, f: impl Fn(char) -> bool) -> &str {
        let start = self.pos;
        while let Some(c) = self.peek().filter(|&c| f(c)) {
            self.pos += c.len_utf8();
        }
        &self.s[start..self.pos]
    }

    fn skip_space(&mut self) {
        self.skip_while(|c| c == ' ' || c == '\t');
    }

    fn token(&mut self) -> String {
        self.skip_while(is_tchar).to_string()
    }

    /// A quoted-string after its opening quote: `\` escapes the next character.
    fn quoted(&mut self) -> String {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            self.pos += c.len_utf8();
            match c {
                '"' => break,
                '\\' => {
                    if let Some(n) = self.peek() {
                        self.pos += n.len_utf8();
                        out.push(n);
                    }
                }
                _ => out.push(c),
            }
        }
        out
    }

    /// `name = value` at the cursor, or `None` (cursor unmoved) when what follows is not
    /// a parameter: the next challenge's scheme, or a token68.
    fn param(&mut self) -> Option<(String, String)> {
        let start = self.pos;
        let name = self.token();
        self.skip_space();
        if name.is_empty() || self.peek() != Some('=') {
            self.pos = start;
            return None;
        }
        self.pos += 1;
        self.skip_space();
        let value = if self.peek() == Some('"') {
            self.pos += 1;
            self.quoted()
        } else {
            // A token by the RFC; servers send unquoted URLs too, so read to the next comma.
            self.skip_while(|c| c != ',' && c != ' ' && c != '\t')
                .to_string()
        };
        Some((name.to_ascii_lowercase(), value))
    }
}

/// Every challenge in one `WWW-Authenticate` value (several may share one header, separated
/// by commas, as may the parameters of each; quoted values may hold commas and `=`).
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut lx = Lexer { s: header, pos: 0 };
    let mut out = Vec::new();
    loop {
        lx.skip_while(|c| c == ',' || c == ' ' || c == '\t');
        if lx.peek().is_none() {
            return out;
        }
        let scheme = lx.token();
        if scheme.is_empty() {
            // Not a challenge: skip one character and look again.
            lx.pos += lx.peek().map_or(1, char::len_utf8);
            continue;
        }
        let mut params = Vec::new();
        loop {
            lx.skip_space();
            if let Some(p) = lx.param() {
                params.push(p);
            } else {
                // A token68 (`Basic dXNlcg==`) carries nothing drydock needs.
                lx.skip_while(|c| is_tchar(c) || c == '/' || c == '=');
            }
            lx.skip_space();
            if lx.peek() != Some(',') {
                break;
            }
            lx.pos += 1;
            lx.skip_space();
            // After a comma: another parameter, or the next challenge.
            let start = lx.pos;
            let more = lx.param().is_some();
            lx.pos = start;
            if !more {
                break;
            }
        }
        out.push(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        });
    }
}

/// How the registry asked to be authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheme {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        /// The scope the registry asked for, when it named one.
        scope: Option<String>,
        /// `insufficient_scope` or `invalid_token` after a token was presented.
        error: Option<String>,
    },
}

impl Scheme {
    /// The scheme drydock answers, from all the challenges of a 401: Bearer (the token
    /// flow) before Basic; `None` if neither is offered.
    pub fn choose(challenges: &[Challenge]) -> Option<Scheme> {
        let bearer = challenges.iter().find(|c| c.scheme == "bearer");
        if let Some(realm) = bearer.and_then(|c| c.param("realm")) {
            let c = bearer.expect("found above");
            let owned = |k: &str| c.param(k).map(str::to_string);
            return Some(Scheme::Bearer {
                realm: realm.to_string(),
                service: owned("service"),
                scope: owned("scope"),
                error: owned("error"),
            });
        }
        challenges
            .iter()
            .any(|c| c.scheme == "basic")
            .then_some(Scheme::Basic)
    }
}

/// The realm of a Bearer challenge, if drydock may ask it for a token: http(s) only, and,
/// when credentials go with the request, on the registry's own host (any port) and not in
/// clear text to another machine unless `allow_http`.
pub fn check_realm(
    realm: &str,
    registry_url: &Url,
    credentials: Option<&Credentials>,
    allow_http: bool,
) -> Result<Url> {
    let registry = shown(registry_url);
    let url = Url::parse(realm).map_err(|e| {
        Error::Key(format!(
            "the registry at {registry} names the token realm {realm:?}, which is not a URL ({e}); drydock will not authenticate there"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Error::Key(format!(
            "the registry at {registry} names the token realm {url}, which is not an http(s) URL; drydock will not authenticate there"
        )));
    }
    let Some(c) = credentials else {
        return Ok(url);
    };
    if url.host() != registry_url.host() {
        return Err(Error::Key(format!(
            "the registry at {} names a token realm on another host, {} ({url}); drydock sends the credentials of {} only to the registry's own host: use the --registry-url whose host serves the token realm",
            registry_url.host_str().unwrap_or_default(),
            url.host_str().unwrap_or_default(),
            c.username
        )));
    }
    if crate::net::is_cleartext_remote(&url) && !allow_http {
        return Err(Error::Key(format!(
            "the token realm {url} of the registry at {registry} is plain http://: drydock will not send the password unencrypted there; serve it over https, or pass --registry-allow-http if the network path is protected otherwise"
        )));
    }
    Ok(url)
}

/// A bearer token and when to stop using it.
#[derive(Clone)]
struct Token {
    auth: Authorization,
    expires: Instant,
}

impl Token {
    fn valid(&self) -> bool {
        Instant::now() < self.expires
    }
}

/// The longest a token is kept, whatever the realm says: `expires_in` is the server's
/// number, and an absurd one must not overflow the clock.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// When a token asked for at `started` stops being used: `expires_in` seconds later (60
/// when not given, at most an hour), less a margin so it does not expire between the check
/// and its use.
fn expiry(started: Instant, expires_in: Option<u64>) -> Instant {
    let lifetime = expires_in
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME)
        .min(MAX_TOKEN_LIFETIME);
    let margin = (lifetime / 10).min(Duration::from_secs(10));
    started + lifetime - margin
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Why a 401 ended the attempt, for the one-line error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing was presented, or an anonymous token: credentials are needed.
    NoCredentials,
    /// The credentials were refused (by the registry or the token realm).
    Refused,
    /// A token issued for the credentials was refused: the account may not do this with
    /// this repository (Harbor answers so for a project that does not exist, too). The
    /// challenge's `error`, if it gave one.
    Denied(Option<String>),
}

impl Refusal {
    /// Why the answer to a request that presented `presented` was a refusal.
    pub fn of(presented: Option<&Authorization>, scheme: Option<&Scheme>) -> Self {
        match presented {
            None => Refusal::NoCredentials,
            Some(a) if a.is_token() => Refusal::Denied(match scheme {
                Some(Scheme::Bearer { error, .. }) => error.clone(),
                _ => None,
            }),
            Some(_) => Refusal::Refused,
        }
    }
}

/// Authenticates the requests of one client: learns the registry's scheme from its first
/// challenge, then authenticates each later request up front; caches tokens per scope.
pub struct Authenticator {
    registry: Url,
    credentials: Option<Credentials>,
    allow_http: bool,
    /// For the token realm: never follows redirects, which could carry the credentials on.
    http: reqwest::Client,
    scheme: Mutex<Option<Scheme>>,
    tokens: Mutex<HashMap<Scope, Arc<tokio::sync::Mutex<Option<Token>>>>>,
}

impl Authenticator {
    pub fn new(
        registry: Url,
        credentials: Option<Credentials>,
        allow_http: bool,
        http: reqwest::Client,
    ) -> Self {
        Authenticator {
            registry,
            credentials,
            allow_http,
            http,
            scheme: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    pub fn username(&self) -> Option<&str> {
        self.credentials.as_ref().map(|c| c.username.as_str())
    }

    /// The header for a request needing `scope`, from what the registry asked before;
    /// `None` when it has not asked yet (or wants nothing drydock has).
    pub async fn authorization(&self, scope: &Scope) -> Result<Option<Authorization>> {
        let known = self.scheme.lock().expect("scheme lock").clone();
        match known {
            None => Ok(None),
            Some(Scheme::Basic) => self.credentials.as_ref().map(|c| c.basic()).transpose(),
            Some(Scheme::Bearer { realm, service, .. }) => self
                .token(scope, &realm, service.as_deref(), scope.as_str(), None)
                .await
                .map(Some),
        }
    }

    /// After a 401 that challenged with `scheme`: remember it and return the header to
    /// retry with. The token `presented`, if cached, is dropped (expired or revoked); one
    /// another request fetched meanwhile is reused.
    pub async fn challenged(
        &self,
        scope: &Scope,
        scheme: Scheme,
        presented: Option<&Authorization>,
    ) -> Result<Option<Authorization>> {
        *self.scheme.lock().expect("scheme lock") = Some(scheme.clone());
        match scheme {
            Scheme::Basic => self.credentials.as_ref().map(|c| c.basic()).transpose(),
            Scheme::Bearer {
                realm,
                service,
                scope: asked,
                ..
            } => {
                let wanted = asked.as_deref().unwrap_or(scope.as_str());
                self.token(scope, &realm, service.as_deref(), wanted, presented)
                    .await
                    .map(Some)
            }
        }
    }

    /// The token cached for `scope`, or a new one from the realm (asked for `wanted`).
    async fn token(
        &self,
        scope: &Scope,
        realm: &str,
        service: Option<&str>,
        wanted: &str,
        stale: Option<&Authorization>,
    ) -> Result<Authorization> {
        let slot = self
            .tokens
            .lock()
            .expect("token cache lock")
            .entry(scope.clone())
            .or_default()
            .clone();
        // One fetch per scope at a time: concurrent requests wait for it and share it.
        let mut cached = slot.lock().await;
        if cached
            .as_ref()
            .is_some_and(|t| stale.is_some_and(|s| s.header() == t.auth.header()))
        {
            *cached = None;
        }
        if let Some(t) = cached.as_ref().filter(|t| t.valid()) {
            return Ok(t.auth.clone());
        }
        let token = self.fetch_token(realm, service, wanted).await?;
        let auth = token.auth.clone();
        *cached = Some(token);
        Ok(auth)
    }

    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<Token> {
        let mut url = check_realm(
            realm,
            &self.registry,
            self.credentials.as_ref(),
            self.allow_http,
        )?;
        let realm_url = url.clone();
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            // A challenge may ask for several scopes, separated by spaces: one parameter each.
            for s in scope.split_whitespace() {
                q.append_pair("scope", s);
            }
        }
        let mut req = self.http.get(url);
        if let Some(c) = &self.credentials {
            req = req.header(reqwest::header::AUTHORIZATION, c.basic()?.header().clone());
        }
        let started = Instant::now();
        let resp = req.send().await.map_err(|e| {
            Error::Other(format!(
                "cannot reach the token realm {realm_url} of the registry at {}: {}",
                shown(&self.registry),
                crate::net::error_chain(&e)
            ))
        })?;
        let status = resp.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            let refusal = if self.credentials.is_some() {
                Refusal::Refused
            } else {
                Refusal::NoCredentials
            };
            return Err(self.refused(refusal, status, &realm_url, None));
        }
        if !status.is_success() {
            return Err(Error::Other(format!(
                "the token realm {realm_url} of the registry at {} answered HTTP {}; check the registry's token service",
                shown(&self.registry),
                status.as_u16()
            )));
        }
        let body = read_capped(
            resp,
            TOKEN_RESPONSE_LIMIT,
            &format!("the token realm {realm_url}"),
        )
        .await?;
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            Error::Other(format!(
                "the token realm {realm_url} did not answer a JSON token; is it the registry's token service?"
            ))
        })?;
        let value = Zeroizing::new(
            parsed
                .token
                .filter(|t| !t.is_empty())
                .or(parsed.access_token)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    Error::Other(format!(
                        "the token realm {realm_url} answered without a token"
                    ))
                })?,
        );
        Ok(Token {
            auth: Authorization::new("Bearer", &value, true)?,
            expires: expiry(started, parsed.expires_in),
        })
    }

    /// The one-line error for a refusal of a request for `scope`; `at` is where it came
    /// from.
    pub fn refused(
        &self,
        why: Refusal,
        status: StatusCode,
        at: &Url,
        scope: Option<&Scope>,
    ) -> Error {
        let registry = shown(&self.registry);
        let code = status.as_u16();
        match (why, self.username()) {
            (Refusal::NoCredentials, _) | (_, None) => Error::Key(format!(
                "the registry at {registry} wants credentials (HTTP {code} from {at}): give --registry-username NAME (a robot account) and its password in --registry-password-file FILE or DRYDOCK_REGISTRY_PASSWORD"
            )),
            (Refusal::Refused, Some(user)) => Error::Key(format!(
                "the registry at {registry} refused the credentials of {user} (HTTP {code} from {at}); check --registry-username and the password file"
            )),
            (Refusal::Denied(error), Some(user)) => {
                let error = error.map(|e| format!(", {e}")).unwrap_or_default();
                let what = scope.map_or("access".to_string(), |s| s.to_string());
                Error::Key(format!(
                    "the registry at {registry} does not grant {user} {what} (HTTP {code}{error} from {at}): give the account that access to the project, or check that the project exists"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn harbor_bearer_challenge() {
        let cs = parse_challenges(
            r#"Bearer realm="https://harbor.example.com/service/token",service="harbor-registry",scope="repository:library/app:pull""#,
        );
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].scheme, "bearer");
        assert_eq!(
            params(&cs[0]),
            vec![
                ("realm", "https://harbor.example.com/service/token"),
                ("service", "harbor-registry"),
                ("scope", "repository:library/app:pull"),
            ]
        );
    }

    #[test]
    fn quoted_values_keep_commas_equals_and_escapes() {
        let cs = parse_challenges(
            r#"Bearer realm="https://h/t?a=b,c=d", scope="repository:a:pull,push", error="say \"no\"""#,
        );
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].param("realm"), Some("https://h/t?a=b,c=d"));
        assert_eq!(cs[0].param("scope"), Some("repository:a:pull,push"));
        assert_eq!(cs[0].param("error"), Some(r#"say "no""#));
    }

    #[test]
    fn several_challenges_in_one_header() {
        let cs = parse_challenges(
            r#"Negotiate abc==, Basic realm="Registry Realm", charset="UTF-8", BEARER Realm=https://h/token , Service = reg"#,
        );
        let schemes: Vec<&str> = cs.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, vec!["negotiate", "basic", "bearer"]);
        assert_eq!(cs[1].param("realm"), Some("Registry Realm"));
        assert_eq!(cs[1].param("charset"), Some("UTF-8"));
        assert_eq!(cs[2].param("realm"), Some("https://h/token"));
        assert_eq!(cs[2].param("service"), Some("reg"));
        assert_eq!(
            Scheme::choose(&cs),
            Some(Scheme::Bearer {
                realm: "https://h/token".into(),
                service: Some("reg".into()),
                scope: None,
                error: None,
            })
        );
    }

    #[test]
    fn odd_headers_do_not_panic() {
        for h in [
            "",
            ",,,",
            "Bearer",
            "Bearer realm=",
            "Bearer realm=\"unterminated",
            "=x",
            "Basic realm=\"a\\",
            "ßasic realm=é",
        ] {
            let _ = parse_challenges(h);
        }
        assert_eq!(Scheme::choose(&parse_challenges("Bearer service=x")), None);
        assert_eq!(
            Scheme::choose(&parse_challenges(r#"Basic realm="x""#)),
            Some(Scheme::Basic)
        );
    }

    fn creds() -> Credentials {
        Credentials {
            username: "robot$drill".into(),
            password: Password::new("pw"),
        }
    }

    #[test]
    fn realms_elsewhere_get_no_credentials() {
        let reg = Url::parse("https://harbor.example.com").unwrap();
        let c = creds();
        let ok = |realm: &str| check_realm(realm, &reg, Some(&c), false);
        assert!(ok("https://harbor.example.com/service/token").is_ok());
        assert!(ok("https://HARBOR.example.com:8443/service/token").is_ok());
        let e = ok("https://evil.example.net/token")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("harbor.example.com") && e.contains("evil.example.net"),
            "{e}"
        );
        assert!(!e.contains("pw"));
        assert!(matches!(
            ok("https://evil.example.net/t"),
            Err(Error::Key(_))
        ));
        // Plain http to another machine: not with a password.
        assert!(ok("http://harbor.example.com/service/token").is_err());
        assert!(check_realm("http://harbor.example.com/t", &reg, Some(&c), true).is_ok());
        // Without credentials there is nothing to harvest.
        assert!(check_realm("https://other.example.net/t", &reg, None, false).is_ok());
    }

    #[test]
    fn realms_must_be_http() {
        let reg = Url::parse("http://127.0.0.1:5000").unwrap();
        for realm in [
            "file:///etc/passwd",
            "ftp://127.0.0.1/t",
            "not a url",
            "data:,x",
        ] {
            assert!(check_realm(realm, &reg, None, false).is_err(), "{realm}");
        }
        assert!(check_realm("http://127.0.0.1:5001/token", &reg, Some(&creds()), false).is_ok());
    }

    #[test]
    fn why_a_refusal() {
        let token = Authorization::new("Bearer", "t", true).unwrap();
        let basic = creds().basic().unwrap();
        let bearer = Scheme::choose(&parse_challenges(
            r#"Bearer realm="https://h/t",error="insufficient_scope""#,
        ));
        assert_eq!(Refusal::of(None, bearer.as_ref()), Refusal::NoCredentials);
        assert_eq!(Refusal::of(Some(&basic), None), Refusal::Refused);
        assert_eq!(
            Refusal::of(Some(&token), bearer.as_ref()),
            Refusal::Denied(Some("insufficient_scope".into()))
        );
        // Harbor answers a token without access with a Basic challenge.
        assert_eq!(
            Refusal::of(Some(&token), Some(&Scheme::Basic)),
            Refusal::Denied(None)
        );
    }

    #[test]
    fn tokens_expire_a_little_early() {
        let t0 = Instant::now();
        assert_eq!(expiry(t0, None), t0 + Duration::from_secs(54));
        assert_eq!(expiry(t0, Some(1800)), t0 + Duration::from_secs(1790));
        assert_eq!(expiry(t0, Some(0)), t0);
        // A realm's absurd lifetime is capped, not an overflow of the clock.
        assert_eq!(expiry(t0, Some(u64::MAX)), t0 + Duration::from_secs(3590));
        let stale = Token {
            auth: Authorization::new("Bearer", "t", true).unwrap(),
            expires: expiry(t0, Some(0)),
        };
        assert!(!stale.valid());
    }

    #[test]
    fn scopes_and_credentials() {
        assert_eq!(
            Scope::repository("team/app", &[Action::Pull, Action::Push]).as_str(),
            "repository:team/app:pull,push"
        );
        let c = creds();
        assert!(!format!("{c:?}").contains("pw"));
        let b = c.basic().unwrap();
        assert!(b.header().is_sensitive());
        assert_eq!(b.header().to_str().unwrap(), "Basic cm9ib3QkZHJpbGw6cHc=");
    }
}
