//! `drydock completions SHELL` and `drydock man`: shell completions and the man page,
//! generated from the clap definition (never hand-written, so they cannot drift from the
//! real options). Neither opens a repository or needs a key.

use clap::{Args, CommandFactory};
use clap_complete::Shell;
use serde_json::json;

use super::{Cli, Context, Output};
use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// A command to write the page of (e.g. `backup`, or `key backup-only`); the top-level
    /// page, drydock(1), when absent.
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The completion script for one shell, on stdout.
///
/// Install: bash `drydock completions bash > /etc/bash_completion.d/drydock`; zsh
/// `drydock completions zsh > "${fpath[1]}/_drydock"`; fish
/// `drydock completions fish > ~/.config/fish/completions/drydock.fish`.
pub async fn completions(_ctx: &Context, a: CompletionsArgs) -> Result<Output> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "drydock", &mut buf);
    let script = String::from_utf8(buf)
        .map_err(|e| Error::Usage(format!("completion script is not UTF-8: {e}")))?;
    let shell = a.shell.to_string();
    Ok(Output::ok(
        script.clone(),
        json!({"shell": shell, "script": script}),
    ))
}

/// The man page (roff) of drydock or of one of its commands, on stdout:
/// `drydock man | man -l -`, or `drydock man > /usr/share/man/man1/drydock.1`.
pub async fn man(_ctx: &Context, a: ManArgs) -> Result<Output> {
    let mut cmd = Cli::command();
    // Propagate global options and versions into subcommands, as parsing would.
    cmd.build();
    let mut name = String::from("drydock");
    for word in &a.command {
        let sub = cmd
            .find_subcommand(word)
            .cloned()
            .ok_or_else(|| Error::Usage(format!("no command {word:?} under `{name}`")))?;
        name = format!("{name}-{}", sub.get_name());
        cmd = sub;
    }
    let cmd = cmd.display_name(name.clone());
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .source(format!("drydock {}", env!("CARGO_PKG_VERSION")))
        .render(&mut buf)
        .map_err(|e| Error::Usage(format!("cannot render the man page: {e}")))?;
    let page =
        String::from_utf8(buf).map_err(|e| Error::Usage(format!("man page is not UTF-8: {e}")))?;
    let page = th_first(&page);
    Ok(Output::ok(
        page.clone(),
        json!({"name": name, "roff": page}),
    ))
}

/// clap_mangen writes string definitions (`.ie \n(.g .ds Aq …`) before `.TH`; put `.TH`
/// first, as man pages conventionally begin (whatis/mandb parsers look for it there). The
/// definitions still come before any use.
fn th_first(page: &str) -> String {
    let lines: Vec<&str> = page.lines().collect();
    let Some(th) = lines.iter().position(|l| l.starts_with(".TH ")) else {
        return page.to_string();
    };
    let mut out = String::with_capacity(page.len() + 1);
    for line in std::iter::once(lines[th])
        .chain(lines[..th].iter().copied())
        .chain(lines[th + 1..].iter().copied())
    {
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn th_moves_first() {
        let page = ".ie a\n.el b\n.TH x 1\n.SH NAME\n";
        assert_eq!(super::th_first(page), ".TH x 1\n.ie a\n.el b\n.SH NAME\n");
        assert_eq!(super::th_first(".TH y 1\n"), ".TH y 1\n");
        assert_eq!(super::th_first("no title\n"), "no title\n");
    }
}
