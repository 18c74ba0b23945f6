//! `meridian completions` and `meridian man`: shell completion scripts (clap_complete)
//! and man pages (clap_mangen).
//!
//! Both are generated from the very `clap::Command` the binary parses with
//! ([`super::command`], examples included), so they cannot drift from the CLI. Packagers
//! run them at build time, e.g.
//! `meridian completions bash > /usr/share/bash-completion/completions/meridian` and
//! `meridian man --out /usr/share/man/man1`.

use std::io::Write;
use std::path::PathBuf;

use clap_complete::aot::Shell;

use super::{CliError, CliResult};

/// Name the scripts complete and the man pages are named after.
pub const BIN_NAME: &str = "meridian";

/// Arguments of `meridian completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to print a completion script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Arguments of `meridian man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write one page per command (meridian.1, meridian-kv.1, meridian-kv-put.1, ...)
    /// into this directory (created if missing) instead of printing meridian(1).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Print the completion script of `args.shell` for `cmd` to stdout.
pub fn run_completions(args: CompletionsArgs, mut cmd: clap::Command) -> CliResult {
    let mut out = std::io::stdout().lock();
    clap_complete::aot::generate(args.shell, &mut cmd, BIN_NAME, &mut out);
    out.flush()?;
    Ok(())
}

/// Print meridian(1) to stdout, or write every page into `args.out`.
pub fn run_man(args: ManArgs, cmd: clap::Command) -> CliResult {
    match args.out {
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            out.flush()?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| {
                CliError::failure(anyhow::anyhow!("cannot create {}: {e}", dir.display()))
            })?;
            clap_mangen::generate_to(cmd, &dir).map_err(|e| {
                CliError::failure(anyhow::anyhow!(
                    "cannot write man pages to {}: {e}",
                    dir.display()
                ))
            })?;
            println!("man pages written to {}", dir.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_completion(shell: Shell) -> String {
        let mut cmd = super::super::command();
        let mut buf = Vec::new();
        clap_complete::aot::generate(shell, &mut cmd, BIN_NAME, &mut buf);
        String::from_utf8(buf).expect("completion scripts are UTF-8")
    }

    #[test]
    fn bash_completion_knows_every_top_level_command() {
        let script = render_completion(Shell::Bash);
        for name in ["node", "cluster", "kv", "bench", "completions", "man"] {
            assert!(script.contains(name), "bash completion lacks {name:?}");
        }
    }

    #[test]
    fn every_shell_gets_a_non_empty_script() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::Elvish, Shell::PowerShell] {
            assert!(!render_completion(shell).is_empty(), "{shell} script is empty");
        }
    }

    #[test]
    fn man_page_carries_the_examples() {
        let mut buf = Vec::new();
        clap_mangen::Man::new(super::super::command()).render(&mut buf).expect("render");
        let page = String::from_utf8(buf).expect("roff is UTF-8");
        assert!(page.contains(".TH meridian"), "no title header");
        assert!(page.contains("Examples"), "the top-level examples are missing");
    }

    #[test]
    fn man_out_writes_a_page_per_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        run_man(ManArgs { out: Some(dir.path().to_path_buf()) }, super::super::command())
            .expect("man --out");
        for page in ["meridian.1", "meridian-kv.1", "meridian-kv-put.1", "meridian-cluster-up.1"] {
            assert!(dir.path().join(page).is_file(), "{page} was not written");
        }
    }
}
