//! `cargo xtask test`: the README's test command and what CI runs.
//!
//! Runs setup when something is missing, then formatting, clippy, the unit
//! tests, `cargo xtask dist` (the release build, once), the privileged
//! integration tests (real kernel, Docker, nginx), the packaging ones on
//! what dist made, and a short chaos soak (`cargo xtask soak`, with one
//! dockerd restart among its faults).
//! Under `CI=true` the privileged tests may not be skipped: a missing
//! capability fails them. Ends with one summary line per suite and a total.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};
use autostop_fixtures::{
    agent::{AGENT_BIN_ENV, TEST_HOOKS_BIN_ENV},
    docker::RESTART_DOCKERD_ENV,
};

use crate::{dist, run, setup};

/// Outcome of one suite.
struct Suite {
    name: &'static str,
    passed: u64,
    failed: u64,
    ignored: u64,
    /// Set when the command itself failed (build error, fmt diff, clippy).
    error: Option<String>,
}

impl Suite {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            passed: 0,
            failed: 0,
            ignored: 0,
            error: None,
        }
    }

    fn ok(&self) -> bool {
        self.error.is_none() && self.failed == 0
    }
}

/// Runs every suite, even after a failure, and fails if any did.
pub fn run() -> anyhow::Result<()> {
    setup::run(setup::Mode::Quiet, setup::Scope::Everything).context("setup")?;

    let mut suites = vec![
        check("fmt", run::cargo().args(["fmt", "--all", "--check"])),
        check(
            "clippy",
            run::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]),
        ),
        cargo_test(
            "unit",
            run::cargo().args([
                "test",
                "--no-fail-fast",
                "--package",
                "autostop-agent",
                "--package",
                "autostop-common",
                "--package",
                "autostop-fixtures",
                "--package",
                "xtask",
            ]),
        ),
    ];

    // The release agent is built once per run, here; the packaging tests
    // (tests/tests/packaging_privileged.rs) install and run what it made.
    println!("\n== dist ==");
    let mut packaged = Suite::new("dist");
    if let Err(e) = dist::run() {
        packaged.error = Some(format!("{e:#}"));
    }
    suites.push(packaged);

    // The hooks build first: both land on target/debug/autostop, and the
    // plain one must be the one left there.
    let built = run::cargo_build_test_hooks_agent()
        .and_then(|hooks| run::cargo_build_agent(false).map(|()| hooks));
    let privileged = match built {
        Ok(hooks) => {
            let mut suite = Suite::new("privileged");
            println!("\n== privileged ==");
            // Every module but `daemon`, then `daemon` alone: it restarts
            // the machine's dockerd. --no-fail-fast: a failing test binary
            // must not hide the others.
            let mut rest = privileged_tests(&hooks, &[], &["--skip", DAEMON_MODULE]);
            cargo_test_into(&mut suite, &mut rest);
            let mut daemon =
                privileged_tests(&hooks, &["--test", PRIVILEGED_BINARY], &[DAEMON_MODULE]);
            daemon.env(RESTART_DOCKERD_ENV, "1");
            cargo_test_into(&mut suite, &mut daemon);
            suite
        }
        Err(e) => {
            let mut suite = Suite::new("privileged");
            suite.error = Some(format!("building the agent failed: {e:#}"));
            suite
        }
    };
    if is_ci() && privileged.ignored > 0 {
        let mut suite = Suite::new("privileged-skips");
        suite.error = Some(format!(
            "{} privileged tests were ignored under CI=true",
            privileged.ignored
        ));
        suites.push(suite);
    }
    suites.push(privileged);
    suites.push(check("soak", &mut soak_command()?));

    println!("\n== summary ==");
    let (mut passed, mut failed) = (0, 0);
    for suite in &suites {
        passed += suite.passed;
        failed += suite.failed;
        match &suite.error {
            Some(error) => println!("{}: FAILED: {error}", suite.name),
            None if suite.passed + suite.failed + suite.ignored == 0 => {
                println!("{}: ok", suite.name)
            }
            None => println!(
                "{}: {} passed, {} failed, {} ignored",
                suite.name, suite.passed, suite.failed, suite.ignored
            ),
        }
    }
    println!("total: {passed} passed, {failed} failed");
    if suites.iter().any(|s| !s.ok()) {
        bail!("some suites failed");
    }
    Ok(())
}

/// Length of the soak's client run under `cargo xtask test` (each fault
/// kind still runs once, which may make it a little longer).
const SOAK_MINUTES: &str = "2.5";

/// `cargo xtask soak` for CI: a short run on the debug agent, dockerd
/// restarts allowed (as for `daemon::`: nothing else uses Docker then).
fn soak_command() -> anyhow::Result<Command> {
    let mut cmd = Command::new(std::env::current_exe().context("finding xtask itself")?);
    cmd.args(["soak", "--minutes", SOAK_MINUTES, "--dockerd-restarts"])
        .env(RESTART_DOCKERD_ENV, "1");
    Ok(cmd)
}

/// The privileged tests' one test binary (`tests/tests/privileged/`).
const PRIVILEGED_BINARY: &str = "privileged";

/// The module filter of the tests that restart the machine's dockerd
/// (`tests/tests/privileged/daemon.rs`).
const DAEMON_MODULE: &str = "daemon::";

/// `cargo test` of the `autostop-tests` package (`targets`: all when
/// empty), one test at a time, with `filters` for the test binaries.
fn privileged_tests(hooks: &std::path::Path, targets: &[&str], filters: &[&str]) -> Command {
    let mut cmd = run::cargo();
    cmd.args(["test", "--no-fail-fast", "--package", "autostop-tests"])
        .args(targets)
        .args(["--", "--test-threads=1"])
        .args(filters)
        .env(AGENT_BIN_ENV, run::agent_binary(false))
        .env("AUTOSTOP_DIST_DIR", dist::dist_dir())
        .env(TEST_HOOKS_BIN_ENV, hooks);
    cmd
}

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A command whose only result is its exit status.
fn check(name: &'static str, cmd: &mut Command) -> Suite {
    println!("\n== {name} ==");
    let mut suite = Suite::new(name);
    if let Err(e) = run::status(cmd) {
        suite.error = Some(format!("{e:#}"));
    }
    suite
}

/// Runs `cargo test`, echoing its output and adding up its result lines.
fn cargo_test(name: &'static str, cmd: &mut Command) -> Suite {
    println!("\n== {name} ==");
    let mut suite = Suite::new(name);
    cargo_test_into(&mut suite, cmd);
    suite
}

/// Runs `cargo test` as part of `suite`: adds its result lines, and keeps
/// the first error.
fn cargo_test_into(suite: &mut Suite, cmd: &mut Command) {
    let child = cmd.stdout(Stdio::piped()).spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            suite
                .error
                .get_or_insert(format!("starting cargo test: {e}"));
            return;
        }
    };
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some((p, f, i)) = parse_result_line(&line) {
                suite.passed += p;
                suite.failed += f;
                suite.ignored += i;
            }
        }
    }
    let error = match child.wait() {
        Ok(status) if status.success() => return,
        Ok(status) => format!("cargo test exited with {status}"),
        Err(e) => format!("waiting for cargo test: {e}"),
    };
    suite.error.get_or_insert(error);
}

/// Parses `test result: ok. 3 passed; 0 failed; 1 ignored; …`.
fn parse_result_line(line: &str) -> Option<(u64, u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |label: &str| -> u64 {
        rest.split(';')
            .find_map(|part| {
                part.trim()
                    .trim_start_matches("ok. ")
                    .trim_start_matches("FAILED. ")
                    .strip_suffix(label)
            })
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    Some((count(" passed"), count(" failed"), count(" ignored")))
}

#[cfg(test)]
mod tests {
    use super::{parse_result_line, DAEMON_MODULE, PRIVILEGED_BINARY};

    #[test]
    fn daemon_filter_names_the_daemon_module_of_the_one_binary() {
        let dir = crate::run::workspace_root()
            .join("tests/tests")
            .join(PRIVILEGED_BINARY);
        let main = std::fs::read_to_string(dir.join("main.rs")).expect("privileged/main.rs");
        let module = DAEMON_MODULE.trim_end_matches("::");
        assert!(
            main.contains(&format!("\nmod {module};\n")),
            "main.rs lacks mod {module}"
        );
        assert!(dir.join(format!("{module}.rs")).is_file());
        // `--skip daemon::` skips every test path containing it: no other
        // module may end in `daemon`.
        let others = main
            .lines()
            .filter_map(|l| l.strip_prefix("mod ")?.strip_suffix(';'))
            .filter(|m| *m != module && m.ends_with(module))
            .collect::<Vec<_>>();
        assert!(others.is_empty(), "{others:?} also match {DAEMON_MODULE}");
    }

    #[test]
    fn parses_cargo_test_result_lines() {
        let line = "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(parse_result_line(line), Some((3, 0, 1)));
        let line = "test result: FAILED. 2 passed; 5 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(parse_result_line(line), Some((2, 5, 0)));
        assert_eq!(parse_result_line("running 3 tests"), None);
    }
}
