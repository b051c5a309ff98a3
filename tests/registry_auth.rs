//! `verify --registry-url` against registries that want credentials, as Harbor's does: the
//! real distribution registry with `auth: token` (and a token server of this suite that
//! signs JWTs as Harbor's core does) and with `auth: htpasswd`.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use common::registry::{htpasswd_auth, password_file, push_images, Registry};
use common::token::{fixed_server, token_auth_section, TokenServer};
use common::*;

const ROBOT: &str = "robot$drydock";
const NO_PULL: &str = "robot$no-pull";
const PASSWORD: &str = "Tr0ub4dor-registry-7f3a";

/// `verify latest --registry-url URL` with `extra` arguments and environment.
fn verify(repo: &Repo, url: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let mut args = vec!["verify", "latest", "--registry-url", url];
    args.extend_from_slice(extra);
    repo.with_key_env(&repo.identity, &args, env)
}

/// `--registry-username ROBOT --registry-password-file FILE`.
fn login(file: &Path) -> Vec<&str> {
    vec![
        "--registry-username",
        ROBOT,
        "--registry-password-file",
        file.to_str().unwrap(),
    ]
}

/// A repository with a snapshot of a small registry root (two layers of one repository).
fn small_snapshot(dir: &Path) -> (Repo, PathBuf) {
    let root = dir.join("storage");
    registry_tree_with_layers(&root, 2, 16 << 10);
    let repo = local_repo(dir);
    repo.backup_registry(&root);
    (repo, root)
}

/// Neither output of `r` holds the password, in clear or inside basic credentials.
#[track_caller]
fn assert_no_secret(r: &Run, secrets: &[&str]) {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{ROBOT}:{PASSWORD}"));
    for s in secrets.iter().copied().chain([PASSWORD, basic.as_str()]) {
        assert!(
            !r.stdout.contains(s) && !r.stderr.contains(s),
            "a secret leaked:\nstdout: {}\nstderr: {}",
            r.stdout,
            r.stderr
        );
    }
}

/// Good credentials match; a bad password and no credentials exit 5 with one line that
/// says what to fix; the password shows nowhere.
fn check_credentials(repo: &Repo, reg: &Registry, dir: &Path, refused_at: &str) {
    let good = password_file(dir, "good", PASSWORD);
    let bad = password_file(dir, "bad", "not-the-password");
    let ok = verify(repo, &reg.url(), &login(&good), &[]);
    ok.expect(0);
    assert!(ok.stdout.contains("matches snapshot"), "{}", ok.stdout);
    assert_no_secret(&ok, &[]);

    // The password from the environment, the user too.
    verify(
        repo,
        &reg.url(),
        &[],
        &[
            ("DRYDOCK_REGISTRY_USERNAME", ROBOT),
            ("DRYDOCK_REGISTRY_PASSWORD", PASSWORD),
        ],
    )
    .expect(0);

    let refused = verify(repo, &reg.url(), &login(&bad), &[]);
    refused.expect_error(5, &format!("refused the credentials of {ROBOT}"));
    refused.expect_error(5, refused_at);
    refused.expect_error(5, "check --registry-username and the password file");
    assert_eq!(
        refused.stderr.trim().lines().count(),
        1,
        "{}",
        refused.stderr
    );
    assert_no_secret(&refused, &["not-the-password"]);

    let anonymous = verify(repo, &reg.url(), &[], &[]);
    anonymous.expect_error(5, "give --registry-username");
    assert_eq!(
        anonymous.stderr.trim().lines().count(),
        1,
        "{}",
        anonymous.stderr
    );

    // A user without a password is a usage error, found before anything is sent.
    verify(repo, &reg.url(), &["--registry-username", ROBOT], &[])
        .expect_error(2, "needs a password");
}

/// A token server that knows ROBOT and NO_PULL (whose tokens grant nothing), and an empty
/// registry in `dir`/storage that trusts its tokens, for skopeo as ROBOT.
fn token_registry(dir: &Path) -> (TokenServer, PathBuf, Registry) {
    let tokens = TokenServer::start(dir, &[(ROBOT, PASSWORD), (NO_PULL, PASSWORD)], &[NO_PULL]);
    let root = dir.join("storage");
    let reg = Registry::filesystem_with_auth(
        &root,
        &tokens.registry_auth("127.0.0.1"),
        Some(&format!("{ROBOT}:{PASSWORD}")),
    );
    (tokens, root, reg)
}

#[test]
fn token_auth_like_harbor() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, root, reg) = token_registry(dir.path());
    // skopeo pushes through the token flow too: the token server is one a client accepts.
    push_images(&reg);
    let repo = local_repo(dir.path());
    repo.backup_registry(&root);

    let before = tokens.seen().len();
    check_credentials(&repo, &reg, dir.path(), &tokens.realm("127.0.0.1"));
    let seen = tokens.seen();
    // The first verify: one token per repository (three), each fetched once and shared by
    // the concurrent probes; with basic credentials, for the scope the registry asked.
    for s in &seen[before..before + 3] {
        assert!(s.authorization.as_deref().unwrap().starts_with("Basic "));
        let q: Vec<(String, String)> = url::form_urlencoded::parse(s.query.as_bytes())
            .into_owned()
            .collect();
        let scope = &q.iter().find(|(k, _)| k == "scope").unwrap().1;
        assert!(
            scope.starts_with("repository:") && scope.ends_with(":pull"),
            "{scope}"
        );
        assert!(q.contains(&("service".into(), common::token::SERVICE.into())));
    }
    // …and the second (credentials from the environment) three more.
    assert!(seen[before + 3..before + 6]
        .iter()
        .all(|s| s.token.is_some()));

    let good = password_file(dir.path(), "good", PASSWORD);
    // An account the realm issues tokens to that grant nothing (Harbor's answer for a
    // robot without access to the project).
    let denied = verify(
        &repo,
        &reg.url(),
        &[
            "--registry-username",
            NO_PULL,
            "--registry-password-file",
            good.to_str().unwrap(),
        ],
        &[],
    );
    denied.expect_error(5, &format!("does not grant {NO_PULL} repository:"));
    denied.expect_error(5, "insufficient_scope");
    denied.expect_error(5, "give the account that access");

    // With every log on, no secret shows: neither the password nor a token issued.
    let loud = verify(
        &repo,
        &reg.url(),
        &login(&good),
        &[("DRYDOCK_LOG", "trace")],
    );
    loud.expect(0);
    let issued: Vec<String> = tokens.seen().into_iter().filter_map(|s| s.token).collect();
    let issued: Vec<&str> = issued.iter().map(String::as_str).collect();
    assert_no_secret(&loud, &issued);
}

#[test]
fn htpasswd_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, root) = small_snapshot(dir.path());
    let reg =
        Registry::filesystem_with_auth(&root, &htpasswd_auth(dir.path(), ROBOT, PASSWORD), None);
    check_credentials(
        &repo,
        &reg,
        dir.path(),
        &format!("{}/v2/library/app/blobs/", reg.url()),
    );
}

#[test]
fn a_registry_with_a_private_ca_needs_registry_ca_cert() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, root) = small_snapshot(dir.path());
    let pki_dir = dir.path().join("pki");
    std::fs::create_dir_all(&pki_dir).unwrap();
    let pki = common::tls::make_pki(&pki_dir, "drydock registry CA", "IP:127.0.0.1");
    let auth = htpasswd_auth(dir.path(), ROBOT, PASSWORD);
    let reg = Registry::filesystem_tls(&root, &pki.server_cert, &pki.server_key, &auth);
    let url = format!("https://127.0.0.1:{}", reg.port);
    let pw = password_file(dir.path(), "pw", PASSWORD);
    verify(&repo, &url, &login(&pw), &[]).expect_error(5, "--registry-ca-cert");
    let mut trusted = login(&pw);
    trusted.extend(["--registry-ca-cert", pki.ca_cert.to_str().unwrap()]);
    verify(&repo, &url, &trusted, &[]).expect(0);
}

#[test]
fn a_token_realm_on_another_host_gets_no_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(dir.path(), &[(ROBOT, PASSWORD)], &[]);
    let (repo, root) = small_snapshot(dir.path());
    // The registry (reached as 127.0.0.1) sends clients to a realm on `localhost`: the same
    // machine, but another host name, as a hostile registry would name its own server.
    let reg = Registry::filesystem_with_auth(&root, &tokens.registry_auth("localhost"), None);
    let pw = password_file(dir.path(), "pw", PASSWORD);
    let r = verify(&repo, &reg.url(), &login(&pw), &[]);
    r.expect_error(5, "token realm on another host, localhost");
    r.expect_error(5, "registry at 127.0.0.1");
    assert_no_secret(&r, &[]);
    assert!(
        tokens.seen().is_empty(),
        "the realm was asked: {:?}",
        tokens.seen()
    );
}

#[test]
fn a_hostile_token_realm_cannot_flood_or_redirect() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(dir.path(), &[], &[]);
    let (repo, root) = small_snapshot(dir.path());
    let pw = password_file(dir.path(), "pw", PASSWORD);

    // A realm on the registry's host that answers 2 MiB: drydock stops reading at 1 MiB.
    let (flood, _) = fixed_server(
        "200 OK\r\nContent-Type: application/json".into(),
        vec![b' '; 2 << 20],
    );
    let auth = token_auth_section(&format!("http://127.0.0.1:{flood}/t"), &tokens.root_cert);
    let reg = Registry::filesystem_with_auth(&root, &auth, None);
    let r = verify(&repo, &reg.url(), &login(&pw), &[]);
    r.expect_error(1, "more than 1048576 bytes");
    drop(reg);

    // A realm that redirects elsewhere: not followed, so the credentials stay home.
    let (elsewhere, asked) = fixed_server("200 OK".into(), b"{}".to_vec());
    let (redirect, _) = fixed_server(
        format!("302 Found\r\nLocation: http://localhost:{elsewhere}/steal"),
        Vec::new(),
    );
    let auth = token_auth_section(&format!("http://127.0.0.1:{redirect}/t"), &tokens.root_cert);
    let reg = Registry::filesystem_with_auth(&root, &auth, None);
    let r = verify(&repo, &reg.url(), &login(&pw), &[]);
    r.expect_error(1, "answered HTTP 302");
    assert_eq!(*asked.lock().unwrap(), 0, "the redirect was followed");
    assert_no_secret(&r, &[]);
}

fn client(url: &str, user: &str) -> drydock::oci::RegistryClient {
    drydock::oci::RegistryClient::new(&drydock::oci::ClientOptions {
        url: url.to_string(),
        credentials: Some(drydock::oci::Credentials {
            username: user.to_string(),
            password: drydock::secret::Password::new(PASSWORD),
        }),
        ca_cert: None,
        allow_http: false,
        timeout: std::time::Duration::from_secs(30),
    })
    .unwrap()
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// The library's client pushes an image (two blobs, a manifest) through the token flow
/// with a push scope, and skopeo pulls it back whole; an account without access is denied.
#[tokio::test]
async fn the_client_pushes_an_image_through_token_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _root, reg) = token_registry(dir.path());
    let layer = noise(300 << 10, 7);
    let layer_digest = sha256(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    let manifest = drydock::oci::Manifest {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        bytes: manifest,
    };

    let c = client(&reg.url(), ROBOT);
    for blob in [&layer, &config] {
        let body = bytes::Bytes::from(blob.clone());
        c.upload_blob("restored/app", &sha256(blob), || body.clone().into())
            .await
            .unwrap();
    }
    c.put_manifest("restored/app", "v1", &manifest)
        .await
        .unwrap();
    assert_eq!(
        reg.manifest_digest("restored/app:v1"),
        sha256(&manifest.bytes)
    );
    reg.pull("restored/app:v1", &dir.path().join("pulled"));
    let got = c.get_manifest("restored/app", "v1").await.unwrap();
    assert_eq!(got.as_ref(), Some(&manifest));
    assert_eq!(c.get_manifest("restored/app", "v2").await.unwrap(), None);
    let head = c.head_blob("restored/app", &layer_digest).await.unwrap();
    assert_eq!(head.digest.as_deref(), Some(layer_digest.as_str()));
    // The push tokens asked for pull and push (distribution's challenge lists the actions
    // in either order).
    let queries: Vec<String> = tokens.seen().into_iter().map(|s| s.query).collect();
    assert!(
        queries
            .iter()
            .any(|q| q.contains("restored%2Fapp%3Apull%2Cpush")
                || q.contains("restored%2Fapp%3Apush%2Cpull")),
        "{queries:#?}"
    );

    let denied = client(&reg.url(), NO_PULL)
        .put_manifest("restored/app", "v2", &manifest)
        .await
        .unwrap_err();
    assert!(matches!(denied, drydock::Error::Key(_)), "{denied}");
    assert!(
        denied
            .to_string()
            .contains("does not grant robot$no-pull repository:restored/app:pull,push"),
        "{denied}"
    );
}
