//! Examples shown under every command's `--help` (and in the man pages).
//!
//! They live in one table rather than in each command's `after_help` attribute so the
//! whole CLI reads as one consistent tour, and so a test can insist that every command,
//! including ones added later, shows at least one example. A command that sets its own
//! `after_help` (like `meridian node`) keeps it.

use clap::Command;

/// Example command lines per command path (the names from the root, space separated).
pub const EXAMPLES: &[(&str, &[&str])] = &[
    (
        "meridian",
        &[
            "meridian cluster up                         # local 3-node cluster, Ctrl-C stops it",
            "meridian kv put greeting hello",
            "meridian kv get greeting",
            "meridian completions bash > ~/.local/share/bash-completion/completions/meridian",
        ],
    ),
    (
        "meridian cluster",
        &["meridian cluster up", "meridian cluster status", "meridian cluster down"],
    ),
    (
        "meridian cluster up",
        &[
            "meridian cluster up",
            "meridian cluster up cluster/three-regions.toml --data-dir /tmp/meridian",
            "meridian cluster up --tls                   # certificates in ./data/certs",
        ],
    ),
    (
        "meridian cluster members",
        &["meridian cluster members", "meridian cluster members --json --data-dir ./data-3r"],
    ),
    (
        "meridian cluster add-learner",
        &["meridian cluster add-learner 4 --api-addr 127.0.0.1:7004 --raft-addr 127.0.0.1:7104 --region eu-west"],
    ),
    (
        "meridian cluster remove-learner",
        &["meridian cluster remove-learner 4"],
    ),
    (
        "meridian cluster change-membership",
        &[
            "meridian cluster change-membership --voters 1,2,4      # replace voter 3 with 4",
            "meridian cluster change-membership --voters 1,2,3 --retain",
        ],
    ),
    (
        "meridian cluster transfer-leader",
        &["meridian cluster transfer-leader 2"],
    ),
    (
        "meridian cluster status",
        &[
            "meridian cluster status",
            "meridian cluster status --endpoints 127.0.0.1:7001,127.0.0.1:7002",
        ],
    ),
    (
        "meridian cluster down",
        &["meridian cluster down", "meridian cluster down --data-dir /tmp/meridian"],
    ),
    (
        "meridian cluster fault reset",
        &["meridian cluster fault reset      # drop every open proxied connection"],
    ),
    (
        "meridian cluster fault cut",
        &["meridian cluster fault cut 1 2    # node 1 can no longer reach node 2"],
    ),
    (
        "meridian kv",
        &[
            "meridian kv put greeting hello",
            "meridian kv --endpoints 10.0.0.1:7001,10.0.0.2:7001 get greeting --json",
        ],
    ),
    (
        "meridian kv get",
        &["meridian kv get greeting", "meridian kv get greeting --consistency serializable"],
    ),
    (
        "meridian kv put",
        &[
            "meridian kv put greeting hello",
            "meridian kv put greeting hello --expected-version 0   # create only",
        ],
    ),
    (
        "meridian kv cas",
        &["meridian kv cas greeting 1 \"hello, world\"   # exit 1 if not at version 1"],
    ),
    (
        "meridian kv del",
        &["meridian kv del greeting", "meridian kv del greeting --expected-version 2"],
    ),
    (
        "meridian kv watch",
        &["meridian kv watch greeting", "meridian kv watch --prefix account/ --from 120 --json"],
    ),
    ("meridian binlog", &["meridian binlog tail --from 1 --limit 10"]),
    (
        "meridian binlog tail",
        &[
            "meridian binlog tail --endpoint 127.0.0.1:7002 --from 1   # JSON lines, follows",
            "meridian binlog tail --prefix account/ --include-saga-events --limit 100",
        ],
    ),
    (
        "meridian saga",
        &[
            "meridian saga open transfer-7 --deadline 30s",
            "meridian kv put account/alice 70 --saga transfer-7",
            "meridian saga commit transfer-7",
        ],
    ),
    ("meridian saga open", &["meridian saga open transfer-7 --deadline 30s"]),
    (
        "meridian saga commit",
        &["meridian saga commit transfer-7   # exit 2 if it expired or was aborted"],
    ),
    ("meridian saga abort", &["meridian saga abort transfer-7 --reason \"client gave up\""]),
    ("meridian saga get", &["meridian saga get transfer-7 --json"]),
    (
        "meridian kv scan",
        &["meridian kv scan --prefix account/", "meridian kv scan --start a --end m --limit 100"],
    ),
    (
        "meridian kv txn",
        &["meridian kv txn --if 'version(account/alice) = 1' \\\n    \
           --then 'put account/alice 70' --then 'put account/bob 80' \
           --else 'get account/alice'"],
    ),
    (
        "meridian bench",
        &[
            "meridian bench put --concurrency 32 --duration 10s",
            "meridian bench cas --keys 10 --json",
            "meridian bench mixed --consistency serializable --concurrency 64",
        ],
    ),
    (
        "meridian completions",
        &[
            "meridian completions bash > /usr/share/bash-completion/completions/meridian",
            "meridian completions zsh > \"${fpath[1]}/_meridian\"",
            "meridian completions fish > ~/.config/fish/completions/meridian.fish",
        ],
    ),
    (
        "meridian check",
        &[
            "meridian check --endpoints 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 \\\n    \
             --state /var/lib/meridian-check --invariants bank.toml --findings findings.jsonl",
            "meridian check --endpoints 127.0.0.1:7001,127.0.0.1:7002 --state ./chk --once --json",
        ],
    ),
    ("meridian certs", &["meridian certs init --dir certs --nodes 3 --clients admin,alice"]),
    (
        "meridian certs init",
        &[
            "meridian certs init                         # ./certs: CA, node-1..3, admin",
            "meridian certs init --dir certs --node-names node-4 --clients bob --json",
        ],
    ),
    ("meridian man", &["meridian man | man -l -", "meridian man --out /usr/local/share/man/man1"]),
];

/// Render example lines as an `after_help` block.
fn render<S: AsRef<str>>(lines: &[S]) -> String {
    let mut text = String::from("Examples:");
    for line in lines {
        text.push_str("\n  ");
        text.push_str(line.as_ref());
    }
    text
}

/// The examples of the command at `path`, rendered as an `after_help` block.
pub fn examples_for(path: &str) -> Option<String> {
    EXAMPLES.iter().find(|(p, _)| *p == path).map(|(_, lines)| render(lines))
}

/// The example lines (those invoking `meridian ...`) of an `after_help` text.
fn example_lines(after_help: &str) -> Vec<String> {
    after_help
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("meridian "))
        .map(str::to_string)
        .collect()
}

/// `cmd` with examples attached as `after_help` to every command that has none: its
/// [`EXAMPLES`] entry if there is one, else the lines of its closest ancestor's examples
/// that invoke this very command (so `cluster fault partition` shows the `meridian
/// cluster fault partition ...` lines of `cluster fault`).
pub fn with_examples(cmd: Command) -> Command {
    annotate(cmd, "", &[])
}

fn annotate(cmd: Command, parent: &str, inherited: &[String]) -> Command {
    let path = if parent.is_empty() {
        cmd.get_name().to_string()
    } else {
        format!("{parent} {}", cmd.get_name())
    };
    let cmd = if cmd.get_after_help().is_some() {
        cmd
    } else if let Some(text) = examples_for(&path) {
        cmd.after_help(text)
    } else {
        let prefix = format!("{path} ");
        let mine: Vec<&String> =
            inherited.iter().filter(|l| **l == path || l.starts_with(&prefix)).collect();
        if mine.is_empty() {
            cmd
        } else {
            cmd.after_help(render(&mine))
        }
    };
    let lines = match cmd.get_after_help() {
        Some(help) => example_lines(&help.to_string()),
        None => inherited.to_vec(),
    };
    cmd.mut_subcommands(|sub| annotate(sub, &path, &lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command path of `cmd` (the built-in `help` subcommands excluded).
    fn paths(cmd: &Command, parent: &str, out: &mut Vec<(String, bool)>) {
        let path = if parent.is_empty() {
            cmd.get_name().to_string()
        } else {
            format!("{parent} {}", cmd.get_name())
        };
        let has_example = cmd.get_after_help().is_some_and(|h| h.to_string().contains("Example"));
        out.push((path.clone(), has_example));
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            paths(sub, &path, out);
        }
    }

    #[test]
    fn every_command_shows_an_example_in_its_help() {
        let mut all = Vec::new();
        paths(&super::super::command(), "", &mut all);
        let missing: Vec<_> = all.iter().filter(|(_, ok)| !ok).map(|(p, _)| p.as_str()).collect();
        assert!(
            missing.is_empty(),
            "commands without an example in --help: {missing:?}; add them to \
             src/cli/help.rs EXAMPLES (or give the command an after_help)"
        );
    }

    #[test]
    fn every_example_names_an_existing_command() {
        let mut all = Vec::new();
        paths(&super::super::command(), "", &mut all);
        for (path, _) in EXAMPLES {
            assert!(all.iter().any(|(p, _)| p == path), "EXAMPLES names unknown command {path:?}");
        }
    }

    #[test]
    fn top_level_help_ends_with_examples() {
        let help = super::super::command().render_long_help().to_string();
        assert!(help.contains("Examples:\n  meridian cluster up"), "{help}");
    }

    #[test]
    fn every_example_line_starts_with_the_binary() {
        for (path, lines) in EXAMPLES {
            for line in *lines {
                assert!(line.starts_with("meridian "), "{path}: {line:?}");
            }
        }
    }
}
