//! Signals by pid and process inspection through `/proc` (Linux).
//!
//! The launcher only ever signals a pid it spawned, or a recorded pid that
//! [`is_meridian_node`] confirms is still the node we started (pids are reused by the
//! kernel, so a bare recorded pid is never trusted). Nothing here looks processes up
//! by name. Signals go through rustix, which wraps `kill(2)` safely (the crate forbids
//! `unsafe`).

use std::path::Path;

use rustix::process::{Pid, Signal};

/// The signals the launcher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// SIGINT: interrupt (what Ctrl-C sends).
    Int,
    /// SIGTERM: graceful stop.
    Term,
    /// SIGKILL: immediate death (kill -9).
    Kill,
    /// SIGSTOP: freeze.
    Stop,
    /// SIGCONT: thaw.
    Cont,
}

impl Sig {
    fn raw(self) -> Signal {
        match self {
            Sig::Int => Signal::INT,
            Sig::Term => Signal::TERM,
            Sig::Kill => Signal::KILL,
            Sig::Stop => Signal::STOP,
            Sig::Cont => Signal::CONT,
        }
    }
}

/// Send `sig` to the process `pid`.
pub fn send(pid: u32, sig: Sig) -> std::io::Result<()> {
    let raw = i32::try_from(pid).ok().and_then(Pid::from_raw).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("invalid pid {pid}"))
    })?;
    rustix::process::kill_process(raw, sig.raw()).map_err(std::io::Error::from)
}

/// True while `pid` exists and is not a zombie (an exited, unreaped child counts as
/// gone: it runs no code and holds no ports).
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Format: "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// The command line of `pid`, one string per argument; None if the process is gone.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// True when `pid` runs `meridian node` (its executable name contains "meridian" and
/// an argument is "node"), and, when `config` is given, with `--config <config>`.
pub fn is_meridian_node(pid: u32, config: Option<&Path>) -> bool {
    let Some(args) = cmdline(pid) else { return false };
    let Some(exe) = args.first() else { return false };
    let exe_ok =
        Path::new(exe).file_name().is_some_and(|f| f.to_string_lossy().contains("meridian"));
    let node_ok = args.iter().skip(1).any(|a| a == "node");
    let config_ok = match config {
        None => true,
        Some(c) => args.windows(2).any(|w| w[0] == "--config" && Path::new(&w[1]) == c),
    };
    exe_ok && node_ok && config_ok
}

/// True when `pid` runs `meridian cluster up` (a launcher).
pub fn is_meridian_launcher(pid: u32) -> bool {
    let Some(args) = cmdline(pid) else { return false };
    let exe_ok = args.first().is_some_and(|e| {
        Path::new(e).file_name().is_some_and(|f| f.to_string_lossy().contains("meridian"))
    });
    exe_ok && args.windows(2).any(|w| w[0] == "cluster" && w[1] == "up")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_alive_and_not_a_node() {
        let me = std::process::id();
        assert!(is_alive(me));
        assert!(cmdline(me).is_some_and(|a| !a.is_empty()));
        assert!(!is_meridian_node(me, None));
        assert!(!is_meridian_launcher(me));
    }

    #[test]
    fn a_reaped_child_is_gone() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        assert!(!is_alive(pid));
    }

    #[test]
    fn sigkill_ends_a_child() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("spawn sleep");
        send(child.id(), Sig::Kill).expect("kill");
        let status = child.wait().expect("wait");
        assert!(!status.success());
    }
}
