//! The real distribution registry (Debian `docker-registry`) for tests, and real images
//! built with umoci and pushed with skopeo.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::Digest as _;

pub struct Registry {
    pub port: u16,
    /// `user:password` for skopeo, when the registry wants credentials.
    creds: Option<String>,
    _dir: tempfile::TempDir,
    child: Child,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Registry {
    /// A registry on `storage`, with `extra` configuration appended right after the `http:`
    /// section's keys (indented lines extend `http:`, e.g. `tls:`; then top-level sections
    /// such as `auth:`) and the credentials skopeo gives it.
    fn start(storage: &str, extra: &str, creds: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n{storage}  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: drydock-test\n{extra}"
        );
        let path = dir.path().join("config.yml");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("docker-registry")
            .args(["serve", path.to_str().unwrap()])
            .env_remove("AWS_CA_BUNDLE")
            // Its access log: one line per request, for the tests that count them.
            .stdout(std::fs::File::create(dir.path().join("access.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("docker-registry must be installed (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start: {}",
                std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            port,
            creds: creds.map(str::to_string),
            _dir: dir,
            child,
        }
    }

    /// A registry serving a filesystem root.
    pub fn filesystem(root: &Path) -> Self {
        Registry::filesystem_with_auth(root, "", None)
    }

    /// A registry serving a filesystem root that wants the credentials `creds`
    /// (`user:password`) as its `auth` section says (token or htpasswd).
    pub fn filesystem_with_auth(root: &Path, auth: &str, creds: Option<&str>) -> Self {
        Registry::start(
            &format!("  filesystem:\n    rootdirectory: {}\n", root.display()),
            auth,
            creds,
        )
    }

    /// The same over https, with a certificate and key (PEM) for 127.0.0.1.
    pub fn filesystem_tls(root: &Path, cert: &Path, key: &Path, auth: &str) -> Self {
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n{auth}",
            cert.display(),
            key.display()
        );
        Registry::filesystem_with_auth(root, &tls, None)
    }

    /// A registry on the S3 driver (against moto).
    pub fn s3(endpoint: &str, bucket: &str, rootdir: &str) -> Self {
        Registry::start(&format!(
            "  s3:\n    region: us-east-1\n    regionendpoint: {endpoint}\n    bucket: {bucket}\n    rootdirectory: /{rootdir}\n    accesskey: testing\n    secretkey: testing\n    secure: false\n    v4auth: true\n"
        ), "", None)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The digest the registry serves for `repo:tag` (sha256 of the raw manifest).
    pub fn manifest_digest(&self, reference: &str) -> String {
        let raw = Command::new("skopeo")
            .args([
                "--insecure-policy",
                "inspect",
                "--raw",
                "--tls-verify=false",
            ])
            .args(self.creds_args("--creds"))
            .arg(format!("docker://{}/{reference}", self.addr()))
            .output()
            .unwrap();
        assert!(
            raw.status.success(),
            "inspect {reference}: {}",
            String::from_utf8_lossy(&raw.stderr)
        );
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw.stdout)))
    }

    /// Pull `repo:tag` with every platform into an OCI layout: every blob is fetched and
    /// checked against its digest by skopeo.
    pub fn pull(&self, reference: &str, dest: &Path) {
        run(Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--all",
                "--src-tls-verify=false",
            ])
            .args(self.creds_args("--src-creds"))
            .arg(format!("docker://{}/{reference}", self.addr()))
            .arg(format!(
                "oci:{}:{}",
                dest.display(),
                reference.replace(['/', ':'], "_")
            )));
    }

    fn creds_args(&self, flag: &str) -> Vec<String> {
        self.creds
            .iter()
            .flat_map(|c| [flag.to_string(), c.clone()])
            .collect()
    }

    /// Every request the registry answered so far, from its access log: (method, path
    /// with query, status).
    pub fn requests(&self) -> Vec<Request> {
        let log = std::fs::read_to_string(self._dir.path().join("access.log")).unwrap();
        log.lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once('"')?;
                let (line, after) = rest.split_once('"')?;
                let mut words = line.split(' ');
                let (method, target) = (words.next()?, words.next()?);
                let status = after.split_whitespace().next()?.parse().ok()?;
                Some(Request {
                    method: method.to_string(),
                    target: target.to_string(),
                    status,
                })
            })
            .collect()
    }

    /// Delete a manifest by digest through the registry API (its tags go with it).
    pub fn delete(&self, repository: &str, digest: &str) {
        run(Command::new("skopeo")
            .args(["--insecure-policy", "delete", "--tls-verify=false"])
            .args(self.creds_args("--creds"))
            .arg(format!("docker://{}/{repository}@{digest}", self.addr())));
    }

    pub fn push(&self, layout: &Path, tag: &str, reference: &str) {
        run(Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--all",
                "--dest-tls-verify=false",
            ])
            .args(self.creds_args("--dest-creds"))
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{reference}", self.addr())));
    }
}

/// One line of the registry's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub status: u16,
}

impl Request {
    /// A request that changes the registry (HEAD and GET do not).
    pub fn writes(&self) -> bool {
        !matches!(self.method.as_str(), "HEAD" | "GET")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `push_images` pushes: (layout tag, repository:tag).
pub const PUSHED: &[(&str, &str)] = &[
    ("a-v1", "library/app-a:v1"),
    ("a-v1", "library/app-a:stable"),
    ("a-v2", "library/app-a:v2"),
    ("b", "team/sub/app-b:latest"),
    ("multi", "team/sub/app-b:multi"),
    ("big", "library/big:1"),
];

fn tar_with(dir: &Path, name: &str, file: &str, data: &[u8]) -> PathBuf {
    let src = dir.join(format!("{name}-src"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join(file), data).unwrap();
    let tar = dir.join(format!("{name}.tar"));
    run(Command::new("tar").args([
        "-C",
        src.to_str().unwrap(),
        "-cf",
        tar.to_str().unwrap(),
        file,
    ]));
    tar
}

/// An OCI layout with images sharing a base layer, two architectures under one index, and
/// a big image; built once per checkout under the cargo target tmpdir.
pub fn images() -> &'static Path {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("drydock-test-images-v1");
        let layout = root.join("layout");
        if root.join("done").exists() {
            return layout;
        }
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let l = layout.to_str().unwrap().to_string();
        let umoci = |args: &[&str]| run(Command::new("umoci").args(args));
        umoci(&["init", "--layout", &l]);
        umoci(&["new", "--image", &format!("{l}:empty")]);
        let layer = |name: &str, size: usize, seed: u64| {
            tar_with(
                &root,
                name,
                &format!("{name}.bin"),
                &super::noise(size, seed),
            )
        };
        let add = |from: &str, to: &str, tar: &Path| {
            umoci(&[
                "raw",
                "add-layer",
                "--image",
                &format!("{l}:{from}"),
                "--tag",
                to,
                tar.to_str().unwrap(),
            ])
        };
        add("empty", "base", &layer("base", 1 << 20, 1));
        add("base", "a-v1", &layer("a", 300 << 10, 2));
        add("a-v1", "a-v2", &layer("a2", 200 << 10, 3));
        add("base", "b", &layer("b", 400 << 10, 4));
        add("base", "b-arm", &layer("barm", 400 << 10, 5));
        umoci(&[
            "config",
            "--image",
            &format!("{l}:b-arm"),
            "--architecture",
            "arm64",
        ]);
        add("empty", "big", &layer("big", 24 << 20, 6));
        make_index(&layout, &["b", "b-arm"], "multi");
        std::fs::write(root.join("done"), "").unwrap();
        layout
    })
}

/// Add an image index tagged `tag` over the manifests tagged `members`.
fn make_index(layout: &Path, members: &[&str], tag: &str) {
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap().clone();
    let mut entries = Vec::new();
    for (m, arch) in members.iter().zip(["amd64", "arm64"]) {
        let d = manifests
            .iter()
            .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == *m)
            .unwrap_or_else(|| panic!("no manifest tagged {m}"));
        let mut d = d.clone();
        d.as_object_mut().unwrap().remove("annotations");
        d["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        entries.push(d);
    }
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .unwrap();
    let hex = hex::encode(sha2::Sha256::digest(&body));
    std::fs::write(layout.join("blobs/sha256").join(&hex), &body).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": body.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Push every image of [`PUSHED`] and return (reference, digest).
pub fn push_images(registry: &Registry) -> Vec<(String, String)> {
    let layout = images();
    PUSHED
        .iter()
        .map(|(tag, reference)| {
            registry.push(layout, tag, reference);
            (reference.to_string(), registry.manifest_digest(reference))
        })
        .collect()
}

/// Assert a registry serves every reference with the same digest, and pull each fully.
pub fn assert_serves(registry: &Registry, expected: &[(String, String)], scratch: &Path) {
    for (reference, digest) in expected {
        assert_eq!(&registry.manifest_digest(reference), digest, "{reference}");
        registry.pull(reference, &scratch.join("pulled"));
    }
}

/// A file holding `password` (and a newline, as an editor leaves it).
pub fn password_file(dir: &Path, name: &str, password: &str) -> PathBuf {
    let f = dir.join(name);
    std::fs::write(&f, format!("{password}\n")).unwrap();
    f
}

/// A registry `auth:` section for htpasswd (bcrypt, as distribution requires) with one
/// user, its file written in `dir`.
pub fn htpasswd_auth(dir: &Path, user: &str, password: &str) -> String {
    let line = run(Command::new("htpasswd").args(["-nbB", user, password]));
    let path = dir.join("htpasswd");
    std::fs::write(&path, line.trim_end()).unwrap();
    format!(
        "auth:\n  htpasswd:\n    realm: drydock-test\n    path: {}\n",
        path.display()
    )
}
