//! `autostop-docs OUT_DIR [--date YYYY-MM-DD]`: renders the man pages
//! (clap_mangen) and the bash, zsh and fish completions (clap_complete) of
//! the `autostop` command line (`autostop::cli`) into `OUT_DIR/man` and
//! `OUT_DIR/completions`. `cargo xtask dist` runs it; it is never
//! installed.
//!
//! One page per command, as git does: `autostop.1` (with FILES, EXIT
//! STATUS, ENVIRONMENT and SEE ALSO written here) and `autostop-run.1`,
//! `autostop-status.1`, … for the subcommands.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use clap_complete::Shell;

/// The manual every page belongs to (centre of the page footer/header).
const MANUAL: &str = "autostop manual";

/// Completion scripts: shell and file name (what Debian's shells load
/// from their vendor directories).
const COMPLETIONS: &[(Shell, &str)] = &[
    (Shell::Bash, "autostop"),
    (Shell::Zsh, "_autostop"),
    (Shell::Fish, "autostop.fish"),
];

/// Sections of `autostop.1` that the CLI definition cannot carry (roff).
const EXTRA_SECTIONS: &str = r#".SH FILES
.TP
\fI/etc/autostop/autostop.toml\fR
The configuration (services, status API, themes and state directories).
\fBautostop check\fR validates it.
.TP
\fI/etc/autostop/themes/\fR
User wait-page themes (\fINAME\fR.html), beside the built-in ones.
.TP
\fI/var/lib/autostop/\fR
State kept across restarts: run-time idle timeouts, learned start times,
RAM savings.
.TP
\fI/lib/systemd/system/autostop.service\fR
The systemd unit (\fBType=notify\fR, with a watchdog); it runs
\fBautostop run\fR as root with only CAP_BPF and CAP_NET_ADMIN.
.SH EXIT STATUS
0 on success; 1 when a command or the agent failed (a task panic or an
unexpected end of one of the agent's tasks included); 2 when
\fBautostop check\fR or \fBautostop import\-json\fR found the input invalid;
70 when the agent's clean\-up at shutdown did not finish within 10 seconds.
.SH ENVIRONMENT
.TP
\fBRUST_LOG\fR
Log filter (default \fBinfo\fR), e.g. \fBautostop=debug\fR.
.TP
\fBAUTOSTOP_NFT_TABLE\fR
Name of the agent's nftables table (\fBinet autostop\fR by default).
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR
Set by systemd: readiness, watchdog and stopping notifications.
.SH SEE ALSO
\fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBdocker\fR(1),
/usr/share/doc/autostop/README.md
"#;

fn main() -> anyhow::Result<()> {
    let (out, date) = parse_args(std::env::args().skip(1))?;
    render(&out, &date)
}

/// `OUT_DIR [--date DATE]`.
fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<(PathBuf, String)> {
    let mut out = None;
    let mut date = String::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--date" => date = args.next().context("--date needs a value (YYYY-MM-DD)")?,
            _ if out.is_none() && !arg.starts_with('-') => out = Some(PathBuf::from(arg)),
            _ => bail!(
                "unexpected argument {arg:?}; usage: autostop-docs OUT_DIR [--date YYYY-MM-DD]"
            ),
        }
    }
    let out = out.context("usage: autostop-docs OUT_DIR [--date YYYY-MM-DD]")?;
    Ok((out, date))
}

/// Writes every man page and completion script under `out`.
fn render(out: &Path, date: &str) -> anyhow::Result<()> {
    let man_dir = out.join("man");
    let completions_dir = out.join("completions");
    for dir in [&man_dir, &completions_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut cmd = autostop::cli::command().disable_help_subcommand(true);
    cmd.build();
    write_pages(&cmd, &man_dir, date, true)?;
    for (shell, file) in COMPLETIONS {
        let path = completions_dir.join(file);
        let mut text = Vec::new();
        clap_complete::generate(*shell, &mut cmd.clone(), "autostop", &mut text);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The page of `cmd` and, recursively, of its subcommands.
fn write_pages(cmd: &clap::Command, dir: &Path, date: &str, top: bool) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, date, false)?;
    }
    let man = clap_mangen::Man::new(cmd.clone())
        .section("1")
        .date(date)
        .source(format!("autostop {}", env!("CARGO_PKG_VERSION")))
        .manual(MANUAL);
    let path = dir.join(man.get_filename());
    let mut text = Vec::new();
    man.render(&mut text)
        .with_context(|| format!("rendering {}", path.display()))?;
    if top {
        text.write_all(EXTRA_SECTIONS.as_bytes())?;
    } else {
        text.write_all(b".SH SEE ALSO\n\\fBautostop\\fR(1)\n")?;
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_gets_a_page_and_every_shell_a_script() {
        let out = tempfile::tempdir().expect("tempdir");
        render(out.path(), "2026-01-02").expect("render");
        let top = std::fs::read_to_string(out.path().join("man/autostop.1")).expect("autostop.1");
        assert!(
            top.contains("\n.TH autostop 1 2026-01-02 \"autostop "),
            "{top}"
        );
        assert!(
            top.contains(".SH FILES") && top.contains("set\\-timeout"),
            "{top}"
        );
        for sub in [
            "run",
            "status",
            "check",
            "set-timeout",
            "import-json",
            "watch",
        ] {
            let page = out.path().join(format!("man/autostop-{sub}.1"));
            let text = std::fs::read_to_string(&page)
                .unwrap_or_else(|e| panic!("{}: {e}", page.display()));
            assert!(text.contains(".SH SEE ALSO"), "{text}");
        }
        let run = std::fs::read_to_string(out.path().join("man/autostop-run.1")).expect("run");
        assert!(run.contains("/etc/autostop/autostop.toml"), "{run}");
        for (_, file) in COMPLETIONS {
            let text = std::fs::read_to_string(out.path().join("completions").join(file))
                .expect("completion script");
            assert!(
                text.contains("set-timeout") && text.contains("import-json"),
                "{file}: {text}"
            );
        }
    }

    #[test]
    fn arguments_are_checked() {
        let args = |list: &[&str]| parse_args(list.iter().map(|s| (*s).to_owned()));
        assert_eq!(
            args(&["out", "--date", "2026-01-02"]).expect("valid"),
            (PathBuf::from("out"), "2026-01-02".to_owned())
        );
        assert!(args(&[]).is_err());
        assert!(args(&["out", "--date"]).is_err());
        assert!(args(&["out", "--bogus"]).is_err());
    }
}
