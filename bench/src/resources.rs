//! Resource and machine facts read from Linux: a process's RSS (`/proc/<pid>/status`)
//! and CPU time (`/proc/<pid>/stat`), a directory's disk usage (allocated blocks, like
//! `du`), the load average, the time.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Context;

/// Most directory entries [`disk_usage_mib`] visits (a bound on the walk).
pub const MAX_WALK_ENTRIES: usize = 1_000_000;
/// Bytes per MiB.
const MIB: f64 = 1024.0 * 1024.0;

/// Resident set size of `pid`, MiB.
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    parse_vm_rss_kib(&status)
        .map(|kib| kib as f64 / 1024.0)
        .with_context(|| format!("no VmRSS line in /proc/{pid}/status"))
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`USER_HZ`, 100 on Linux for
/// every architecture this runs on).
pub const USER_HZ: f64 = 100.0;

/// User plus system CPU time of `pid` (all its threads) so far, seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|t| t as f64 / USER_HZ)
        .with_context(|| format!("no utime/stime in /proc/{pid}/stat"))
}

/// utime + stime of a `/proc/<pid>/stat` line: fields 14 and 15, counted after the
/// command name, which is in parentheses and may itself hold spaces and parentheses.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Disk space allocated to the files under `dir` (st_blocks, as `du` counts), MiB.
/// The store is running while it is measured: a file or directory removed during the
/// walk (a replaced snapshot, a purged log segment) counts as gone, not as an error.
pub fn disk_usage_mib(dir: &Path) -> anyhow::Result<f64> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let mut stack = vec![dir.to_path_buf()];
    let (mut bytes, mut visited) = (0u64, 0usize);
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Err(e) if gone(&e) && d != dir => continue,
            r => r.with_context(|| format!("read {}", d.display()))?,
        };
        for entry in entries {
            visited += 1;
            anyhow::ensure!(
                visited <= MAX_WALK_ENTRIES,
                "more than {MAX_WALK_ENTRIES} files under {}",
                dir.display()
            );
            let entry = entry.with_context(|| format!("read {}", d.display()))?;
            let meta = match entry.metadata() {
                Err(e) if gone(&e) => continue,
                r => r.with_context(|| format!("stat {}", entry.path().display()))?,
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                bytes += meta.blocks() * 512;
            }
        }
    }
    Ok(bytes as f64 / MIB)
}

/// `/proc/loadavg` (empty if unreadable).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string()
}

/// The first line of `etcd --version`.
pub fn etcd_version(binary: &Path) -> String {
    std::process::Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_string))
        .unwrap_or_else(|| "etcd (version unknown)".to_string())
}

/// Now, UTC, RFC 3339 to the second.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "4242 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 3 0 99";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1 2"), None, "a short line is refused");
        assert!(cpu_seconds(std::process::id()).expect("own stat") >= 0.0);
    }

    #[test]
    fn rss_of_this_process_is_positive() {
        assert!(rss_mib(std::process::id()).expect("rss") > 0.0);
        assert_eq!(parse_vm_rss_kib("Name: x\nVmRSS:\t  2048 kB\n"), Some(2048));
    }

    #[test]
    fn disk_usage_counts_nested_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("a")).expect("mkdir");
        std::fs::write(dir.path().join("a/f"), vec![1u8; 1024 * 1024]).expect("write");
        let mib = disk_usage_mib(dir.path()).expect("du");
        assert!((1.0..1.1).contains(&mib), "{mib}");
    }

    #[test]
    fn files_removed_during_the_walk_are_skipped_but_a_missing_dir_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let (root, stop) = (root.clone(), stop.clone());
            // A store replacing files while it is measured (bounded: 20k rounds).
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let sub = root.join(format!("d{}", i % 4));
                    let _ = std::fs::create_dir(&sub);
                    let _ = std::fs::write(sub.join(format!("f{}", i % 16)), [1u8; 10]);
                    let _ = std::fs::remove_file(sub.join(format!("f{}", (i + 8) % 16)));
                    if i % 64 == 0 {
                        let _ = std::fs::remove_dir_all(&sub);
                    }
                }
            })
        };
        for _ in 0..500 {
            disk_usage_mib(&root).expect("a walk racing removals");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.join().expect("churn thread");
        assert!(disk_usage_mib(&root.join("missing")).is_err());
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_516), (2026, 3, 4));
    }
}
