//! `drydock completions` and `drydock man`: generated from the clap definition, runnable
//! with no repository, no key and no environment.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_drydock");

/// Run drydock with no repository or key in the environment, in an empty directory, so a
/// command that tried to open a repository would fail.
fn drydock(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(BIN)
        .args(args)
        .current_dir(dir.path())
        .env_remove("DRYDOCK_REPO")
        .env_remove("DRYDOCK_KEY_FILE")
        .env_remove("DRYDOCK_VELERO_BSL")
        .output()
        .unwrap()
}

fn stdout_ok(args: &[&str]) -> String {
    let out = drydock(args);
    assert!(
        out.status.success(),
        "drydock {args:?} exited {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bash_completions_name_the_commands() {
    let script = stdout_ok(&["completions", "bash"]);
    assert!(script.contains("drydock"), "{script}");
    assert!(script.contains("backup"), "{script}");
    assert!(script.contains("--velero-bsl") || script.contains("--repo"));
}

#[test]
fn every_shell_gets_a_script() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout_ok(&["completions", shell]);
        assert!(script.contains("backup"), "{shell}: {script}");
    }
}

#[test]
fn unknown_shell_is_a_usage_error() {
    let out = drydock(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_page_is_roff() {
    let page = stdout_ok(&["man"]);
    assert!(page.starts_with(".TH"), "{}", &page[..page.len().min(200)]);
    assert!(page.contains("drydock"));
    assert!(page.contains("backup"));
}

#[test]
fn man_page_of_a_command() {
    let page = stdout_ok(&["man", "backup"]);
    assert!(page.starts_with(".TH"), "{}", &page[..page.len().min(200)]);
    assert!(page.contains("drydock\\-backup") || page.contains("drydock-backup"));
    assert!(
        page.contains("registry"),
        "backup's own options are on its page"
    );
    let out = drydock(&["man", "no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
}
