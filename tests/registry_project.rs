//! `restore --registry-url URL --project NAME [--repository NAME[:TAG]]`: one project or
//! repository pushed back into a running registry through its API, against the real
//! distribution registry with token auth (as Harbor's) and without auth. Images are pushed
//! by skopeo, deleted through the API (DELETE of each manifest by digest), and pulled back
//! by skopeo by their original digests; the registry's access log shows what was sent.

mod common;

use std::path::Path;

use common::registry::{images, password_file, push_images, Registry, Request};
use common::token::TokenServer;
use common::*;

const ROBOT: &str = "robot$drydock";
const PASSWORD: &str = "Tr0ub4dor-project-91c2";

/// Every reference skopeo pushed, with its digest: [`push_images`] (projects `library` and
/// `team`) and a third project, `other`, whose image shares its base layer with them.
fn push_projects(reg: &Registry) -> Vec<(String, String)> {
    let mut pushed = push_images(reg);
    reg.push(images(), "b", "other/app-c:1");
    pushed.push(("other/app-c:1".into(), reg.manifest_digest("other/app-c:1")));
    pushed
}

/// Every manifest revision of `repository` in the registry's storage.
fn revisions(root: &Path, repository: &str) -> Vec<String> {
    let dir = root.join(format!(
        "docker/registry/v2/repositories/{repository}/_manifests/revisions/sha256"
    ));
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            // A deleted manifest leaves its directory, without the link.
            d.flatten()
                .filter(|e| e.path().join("link").exists())
                .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Delete every manifest of `repository` through the API, as Harbor's repository delete
/// does; its tags go with them.
fn delete_repository(reg: &Registry, root: &Path, repository: &str) {
    let all = revisions(root, repository);
    assert!(!all.is_empty(), "{repository} has no manifests to delete");
    for d in all {
        reg.delete(repository, &d);
    }
}

fn of<'a>(pushed: &'a [(String, String)], repository: &str) -> Vec<&'a (String, String)> {
    pushed
        .iter()
        .filter(|(r, _)| r.split_once(':').unwrap().0 == repository)
        .collect()
}

/// The registry serves every tag of `repository` with its original digest, and skopeo
/// pulls each whole by that digest.
fn assert_restored(reg: &Registry, pushed: &[(String, String)], repository: &str, scratch: &Path) {
    let tags = of(pushed, repository);
    assert!(!tags.is_empty());
    for (reference, digest) in tags {
        assert_eq!(&reg.manifest_digest(reference), digest, "{reference}");
        reg.pull(&format!("{repository}@{digest}"), &scratch.join("pulled"));
    }
}

/// The requests that changed the registry after the first `since`.
fn writes_since(reg: &Registry, since: usize) -> Vec<Request> {
    reg.requests()[since..]
        .iter()
        .filter(|r| r.writes())
        .cloned()
        .collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `restore latest --registry-url URL ARGS…` with the identity.
fn restore(repo: &Repo, url: &str, args: &[&str]) -> Run {
    let mut all = vec!["restore", "latest", "--registry-url", url];
    all.extend_from_slice(args);
    repo.id(&all)
}

#[test]
fn one_project_and_one_repository_back_through_token_auth() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(dir.path(), &[(ROBOT, PASSWORD)], &[]);
    let root = dir.path().join("storage");
    let reg = Registry::filesystem_with_auth(
        &root,
        &tokens.registry_auth("127.0.0.1"),
        Some(&format!("{ROBOT}:{PASSWORD}")),
    );
    let pushed = push_projects(&reg);
    let repo = local_repo(dir.path());
    repo.backup_registry(&root);

    // Someone deletes repository library/app-a and the whole project team.
    delete_repository(&reg, &root, "library/app-a");
    delete_repository(&reg, &root, "team/sub/app-b");
    // Its layer links too, as nothing of the project is left once Harbor's GC has run:
    // its blobs must come back by mount or upload.
    std::fs::remove_dir_all(root.join("docker/registry/v2/repositories/team")).unwrap();
    let untouched = ["library/big", "other/app-c"];
    let before: Vec<(String, String)> = untouched
        .iter()
        .flat_map(|r| of(&pushed, r))
        .cloned()
        .collect();
    let good = password_file(dir.path(), "good", PASSWORD);
    let login = [
        "--registry-username",
        ROBOT,
        "--registry-password-file",
        good.to_str().unwrap(),
    ];
    let with_login = |extra: &[&str]| -> Vec<String> {
        login.iter().chain(extra).map(|s| s.to_string()).collect()
    };

    // --dry-run: what would go, and not one request to the registry.
    let sent = reg.requests().len();
    let dry = with_login(&["--project", "team", "--dry-run"]);
    let r = restore(&repo, &reg.url(), &args(&dry));
    r.expect(0);
    assert!(
        r.stdout
            .contains("would push team/sub/app-b: 2 tags, 3 manifests, 5 blobs"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("nothing was sent"), "{}", r.stdout);
    assert!(r.stdout.contains("not restored this way"), "{}", r.stdout);
    assert!(r.stdout.contains("robot accounts"), "{}", r.stdout);
    assert_eq!(reg.requests().len(), sent, "a dry run sent requests");

    // Unknown project, repository or tag: exit 2, listing what the snapshot has.
    let r = restore(
        &repo,
        &reg.url(),
        &args(&with_login(&["--project", "nosuch"])),
    );
    r.expect_error(2, "has no project nosuch; it has: library (2 repositories), other (1 repositories), team (1 repositories)");
    for (repository, listed) in [
        ("nosuch", "it has: library/app-a, library/big"),
        ("app-a:v9", "it has: stable, v1, v2"),
    ] {
        let selection = ["--project", "library", "--repository", repository];
        let r = restore(&repo, &reg.url(), &args(&with_login(&selection)));
        r.expect_error(2, listed);
    }

    // Bad credentials: exit 5, one line, no secret.
    let bad = password_file(dir.path(), "bad", "not-the-password");
    let r = restore(
        &repo,
        &reg.url(),
        &[
            "--registry-username",
            ROBOT,
            "--registry-password-file",
            bad.to_str().unwrap(),
            "--project",
            "team",
        ],
    );
    r.expect_error(5, &format!("refused the credentials of {ROBOT}"));
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(!r.stderr.contains(PASSWORD) && !r.stderr.contains("not-the-password"));

    // The whole project team, then one repository of library.
    let sent = reg.requests().len();
    let team = with_login(&["--json", "--project", "team"]);
    let r = restore(&repo, &reg.url(), &args(&team));
    r.expect(0);
    let report = &r.json()["repositories"][0];
    assert_eq!(report["repository"], "team/sub/app-b");
    assert_eq!(report["tags_pushed"], 2);
    assert_eq!(report["manifests_pushed"], 3);
    // The base layer, b's layer and config are still in other repositories: mounted from
    // there; the arm64 image's layer and config are uploaded.
    assert_eq!(report["blobs_mounted"], 3, "{report}");
    assert_eq!(report["blobs_uploaded"], 2, "{report}");
    let app_a = with_login(&["--project", "library", "--repository", "library/app-a"]);
    let r = restore(&repo, &reg.url(), &args(&app_a));
    r.expect(0);
    assert!(
        r.stdout.contains("restored library/app-a into"),
        "{}",
        r.stdout
    );
    let writes = writes_since(&reg, sent);
    assert!(
        writes.iter().any(|w| w.method == "POST"
            && w.target.contains("mount=")
            && w.target.contains("from=other%2Fapp-c")
            && w.status == 201),
        "{writes:#?}"
    );
    // Only the restored repositories were written to.
    for w in &writes {
        assert!(
            w.target.starts_with("/v2/team/sub/app-b/")
                || w.target.starts_with("/v2/library/app-a/"),
            "a write elsewhere: {w:?}"
        );
    }
    let puts = |repo: &str| {
        writes
            .iter()
            .filter(|w| {
                w.method == "PUT" && w.target.starts_with(&format!("/v2/{repo}/manifests/"))
            })
            .count()
    };
    // Manifests by digest, then tags: team 3 + 2, app-a 2 + 3.
    assert_eq!((puts("team/sub/app-b"), puts("library/app-a")), (5, 5));
    for r in ["team/sub/app-b", "library/app-a"] {
        assert_restored(&reg, &pushed, r, dir.path());
    }
    for (reference, digest) in &before {
        assert_eq!(
            &reg.manifest_digest(reference),
            digest,
            "{reference} changed"
        );
    }

    // A second run finds everything with HEADs and pushes nothing.
    let sent = reg.requests().len();
    let again = restore(
        &repo,
        &reg.url(),
        &args(&with_login(&["--project", "team"])),
    );
    again.expect(0);
    assert!(again.stdout.contains("nothing pushed"), "{}", again.stdout);
    let again = restore(&repo, &reg.url(), &args(&app_a));
    again.expect(0);
    assert_eq!(writes_since(&reg, sent), vec![], "a second run pushed");
    assert!(reg.requests()[sent..]
        .iter()
        .all(|r| r.method == "HEAD" || r.status == 401));
}

#[test]
fn one_tag_back_into_a_registry_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let reg = Registry::filesystem(&root);
    let pushed = push_images(&reg);
    let repo = local_repo(dir.path());
    repo.backup_registry(&root);
    delete_repository(&reg, &root, "library/app-a");

    let sent = reg.requests().len();
    let r = restore(
        &repo,
        &reg.url(),
        &["--project", "library", "--repository", "app-a:v2"],
    );
    r.expect(0);
    assert!(
        r.stdout
            .contains("library/app-a: 1 tags, 1 manifests, 4 blobs"),
        "{}",
        r.stdout
    );
    let v2: Vec<(String, String)> = pushed
        .iter()
        .filter(|(r, _)| r == "library/app-a:v2")
        .cloned()
        .collect();
    assert_restored(&reg, &v2, "library/app-a", dir.path());
    // v1 and stable were not asked for.
    let tags = reg
        .requests()
        .iter()
        .skip(sent)
        .filter(|w| w.method == "PUT" && w.target.ends_with("/manifests/v2"))
        .count();
    assert_eq!(tags, 1);
    assert_eq!(revisions(&root, "library/app-a").len(), 1);
    // Without auth nothing asks for credentials.
    assert!(reg.requests().iter().all(|r| r.status != 401));
}
