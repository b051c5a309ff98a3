//! A holder of the backup-only key can forge snapshots. Restore must treat them as untrusted:
//! nothing may be written outside the target.

mod common;

use std::fs;
use std::path::Path;

use common::forge::{dir_node, file_node, forge, node, root};
use common::*;
use drydock::repo::tree::NodeKind;

/// Restore fails with one error line mentioning `why`, and `outside` stays empty.
fn restore_must_fail(repo: &Repo, dir: &Path, outside: &Path, why: &str) {
    let out = dir.join("out");
    let r = repo.id(&["restore", "latest", "--config-dir", out.to_str().unwrap()]);
    assert_eq!(
        r.code, 4,
        "a forged snapshot must be an integrity error: {}",
        r.stderr
    );
    assert_eq!(r.error_lines().len(), 1, "{}", r.stderr);
    assert!(r.stderr.contains(why), "want {why:?}: {}", r.stderr);
    assert!(
        walk(outside).is_empty(),
        "restore wrote outside its target: {:?}",
        walk(outside)
    );
}

#[test]
fn a_root_reaching_through_a_restored_symlink_writes_nothing_outside() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let target = outside.to_str().unwrap().to_string();
    forge(&repo, move |w| {
        let mut link = node("link", NodeKind::Symlink);
        link.target = Some(target);
        let x = dir_node(w, "x", vec![link]);
        vec![
            root("/x", x),
            root("/x/link/evil", file_node(w, "evil", b"pwned")),
        ]
    });
    restore_must_fail(&repo, dir.path(), &outside, "overlap");
}

#[test]
fn a_tree_naming_a_symlink_and_a_directory_alike_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let target = outside.to_str().unwrap().to_string();
    forge(&repo, move |w| {
        let mut link = node("a", NodeKind::Symlink);
        link.target = Some(target);
        let a = dir_node(w, "a", vec![file_node(w, "f", b"pwned")]);
        let x = dir_node(w, "x", vec![link, a]);
        vec![root("/x", x)]
    });
    restore_must_fail(&repo, dir.path(), &outside, "names \"a\" twice");
}

#[test]
fn a_file_whose_chunks_do_not_add_up_to_its_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    forge(&repo, |w| {
        let mut f = file_node(w, "f", b"twelve bytes");
        f.size += 10;
        vec![root("/f", f)]
    });
    let out = dir.path().join("out");
    repo.id(&["restore", "latest", "--config-dir", out.to_str().unwrap()])
        .expect_error(4, "its chunks hold");
    let files: Vec<_> = walk(&out).into_iter().filter(|p| p.is_file()).collect();
    assert!(files.is_empty(), "restore left files: {files:?}");
}

#[test]
fn dot_dot_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(dir.path());
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    forge(&repo, move |w| {
        let x = dir_node(w, "x", vec![file_node(w, "..", b"pwned")]);
        vec![
            root("/x", x),
            root("/../../outside/evil", file_node(w, "evil", b"pwned")),
        ]
    });
    restore_must_fail(&repo, dir.path(), &outside, "unsafe name");
}
