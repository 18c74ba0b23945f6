//! The store: `<store>/<test>/<timestamp>/` per run, `<store>/latest` and
//! `<store>/<test>/latest` pointing at the newest one (relative symlinks, replaced
//! atomically by a rename).
//!
//! A run directory holds `history.jsonl`, `history.edn`, `results.json`, `latency.svg`,
//! `rate.svg`, `index.html`, `timeline.html` (register runs that are not linearizable)
//! and `node-N.log` for every node. Names are made of `[A-Za-z0-9._+-]` only.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::HarnessError;

/// Name of the "newest run" symlinks.
pub const LATEST: &str = "latest";

/// `20261103T120000.123Z` (UTC, milliseconds): sortable and safe in a path.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string().replace(['-', ':'], "")
}

/// `name` with every character outside `[A-Za-z0-9._+-]` replaced by `_`.
pub fn sanitize(name: &str) -> String {
    let s: String =
        name.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> HarnessError {
    move |source| HarnessError::Io { context, source }
}

/// Create `<store>/<test>/<timestamp>/` (with a numeric suffix if it exists already).
pub fn create_run_dir(store: &Path, test: &str) -> Result<PathBuf, HarnessError> {
    let parent = store.join(sanitize(test));
    std::fs::create_dir_all(&parent).map_err(io(format!("cannot create {}", parent.display())))?;
    let stamp = timestamp(SystemTime::now());
    for attempt in 0..100 {
        let name = if attempt == 0 { stamp.clone() } else { format!("{stamp}-{attempt}") };
        let dir = parent.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(format!("cannot create {}", dir.display()))(e)),
        }
    }
    Err(HarnessError::Setup(format!("no free run directory under {}", parent.display())))
}

/// Point `<store>/latest` and `<store>/<test>/latest` at `run_dir`.
pub fn link_latest(store: &Path, run_dir: &Path) -> Result<(), HarnessError> {
    let (Some(test_dir), Some(run_name)) = (run_dir.parent(), run_dir.file_name()) else {
        return Err(HarnessError::Setup(format!("bad run directory {}", run_dir.display())));
    };
    let Some(test_name) = test_dir.file_name() else {
        return Err(HarnessError::Setup(format!("bad run directory {}", run_dir.display())));
    };
    replace_symlink(&Path::new(test_name).join(run_name), &store.join(LATEST))?;
    replace_symlink(Path::new(run_name), &test_dir.join(LATEST))
}

fn replace_symlink(target: &Path, link: &Path) -> Result<(), HarnessError> {
    let tmp = link.with_file_name(format!("{LATEST}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .map_err(io(format!("cannot create symlink {}", tmp.display())))?;
    std::fs::rename(&tmp, link).map_err(io(format!("cannot replace {}", link.display())))
}

/// Write `contents` to `dir/name`.
pub fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> Result<PathBuf, HarnessError> {
    let path = dir.join(name);
    std::fs::write(&path, contents).map_err(io(format!("cannot write {}", path.display())))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_names_are_path_safe() {
        let t = timestamp(SystemTime::UNIX_EPOCH);
        assert_eq!(t, "19700101T000000.000Z");
        assert_eq!(sanitize("register-kill+partition"), "register-kill+partition");
        assert_eq!(sanitize("a/b c"), "a_b_c");
        assert_eq!(sanitize(".."), "_..");
    }

    #[test]
    fn latest_points_at_the_newest_run() {
        let store = tempfile::tempdir().expect("tempdir");
        let first = create_run_dir(store.path(), "t").expect("run 1");
        let second = create_run_dir(store.path(), "t").expect("run 2");
        assert_ne!(first, second);
        link_latest(store.path(), &first).expect("link");
        link_latest(store.path(), &second).expect("relink");
        let latest = std::fs::canonicalize(store.path().join(LATEST)).expect("resolves");
        assert_eq!(latest, std::fs::canonicalize(&second).expect("run dir"));
        let per_test =
            std::fs::canonicalize(store.path().join("t").join(LATEST)).expect("resolves");
        assert_eq!(per_test, latest);
    }
}
