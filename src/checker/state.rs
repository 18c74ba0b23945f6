//! The state directory (`meridian check --state DIR`):
//!
//! | file | content |
//! |---|---|
//! | `state.bin` | the whole [`CheckerState`] (cursors per replica, rule state, sagas, compensations), postcard, with a magic header |
//! | `compensations.jsonl` | one JSON line per compensation step (started / finished), for operators |
//! | `lock` | empty; the running checker holds an exclusive `flock` on it |
//!
//! `state.bin` is replaced atomically: written to `state.bin.tmp`, fsynced, renamed over
//! the old file, and the directory fsynced, so a crash leaves either the old or the
//! new state, never a torn one. The findings file (`--findings FILE`, outside or inside
//! the directory) is appended and fsynced before the state that moves the cursor past
//! the findings' events is saved.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::core::{CheckerState, STATE_FORMAT};
use super::finding::FindingRecord;
use super::CheckerError;

/// Magic prefix of `state.bin`.
pub const STATE_MAGIC: &[u8; 8] = b"MRDNCHK1";
/// File name of the state.
pub const STATE_FILE: &str = "state.bin";
/// File name of the compensation journal.
pub const COMPENSATIONS_FILE: &str = "compensations.jsonl";
/// Largest state file accepted when loading, bytes.
pub const MAX_STATE_BYTES: u64 = 512 * 1024 * 1024;

/// File name of the lock held by the checker that owns the directory.
pub const LOCK_FILE: &str = "lock";

/// An opened state directory, owned by this process until dropped: two checkers on
/// one directory would race on the cursor and compensate twice.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    /// Holds an exclusive advisory lock (`flock`) on `lock`; the kernel releases it
    /// when the file closes, so a killed checker never leaves the directory locked.
    _lock: File,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> CheckerError {
    move |e| CheckerError::io(context, e)
}

impl StateDir {
    /// Open (creating if needed) the directory.
    pub fn open(dir: &Path) -> Result<Self, CheckerError> {
        std::fs::create_dir_all(dir)
            .map_err(io(format!("cannot create state directory {}", dir.display())))?;
        if !dir.is_dir() {
            return Err(CheckerError::Invalid(format!("{} is not a directory", dir.display())));
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(format!("cannot open {}", lock_path.display())))?;
        if let Err(e) = fs2::FileExt::try_lock_exclusive(&lock) {
            if e.kind() == fs2::lock_contended_error().kind() {
                return Err(CheckerError::Invalid(format!(
                    "state directory {} is in use by another `meridian check` \
                     (one checker per state directory)",
                    dir.display()
                )));
            }
            return Err(CheckerError::io(format!("cannot lock {}", lock_path.display()), e));
        }
        Ok(Self { dir: dir.to_path_buf(), _lock: lock })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The persisted state, if any.
    pub fn load(&self) -> Result<Option<CheckerState>, CheckerError> {
        let path = self.dir.join(STATE_FILE);
        let bad =
            |message: String| CheckerError::State { path: path.display().to_string(), message };
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CheckerError::io(format!("cannot stat {}", path.display()), e)),
        };
        if meta.len() > MAX_STATE_BYTES {
            return Err(bad(format!("{} bytes, more than {MAX_STATE_BYTES}", meta.len())));
        }
        let bytes = std::fs::read(&path).map_err(io(format!("cannot read {}", path.display())))?;
        let body = bytes
            .strip_prefix(STATE_MAGIC.as_slice())
            .ok_or_else(|| bad("not a meridian check state file (bad magic)".into()))?;
        let state: CheckerState = postcard::from_bytes(body).map_err(|e| bad(e.to_string()))?;
        if state.format != STATE_FORMAT {
            return Err(bad(format!("format {} (this build reads {STATE_FORMAT})", state.format)));
        }
        Ok(Some(state))
    }

    /// Replace the persisted state atomically (temp file, fsync, rename, dir fsync).
    pub fn save(&self, state: &CheckerState) -> Result<(), CheckerError> {
        let body = postcard::to_allocvec(state).map_err(|e| CheckerError::State {
            path: self.dir.join(STATE_FILE).display().to_string(),
            message: format!("cannot encode: {e}"),
        })?;
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let dest = self.dir.join(STATE_FILE);
        let mut file =
            File::create(&tmp).map_err(io(format!("cannot create {}", tmp.display())))?;
        file.write_all(STATE_MAGIC)
            .and_then(|()| file.write_all(&body))
            .and_then(|()| file.sync_all())
            .map_err(io(format!("cannot write {}", tmp.display())))?;
        drop(file);
        std::fs::rename(&tmp, &dest).map_err(io(format!("cannot rename to {}", dest.display())))?;
        sync_dir(&self.dir)
    }

    /// Append one line to the compensation journal and fsync it.
    pub fn journal(&self, line: &serde_json::Value) -> Result<(), CheckerError> {
        let path = self.dir.join(COMPENSATIONS_FILE);
        append_lines(&path, std::slice::from_ref(line))
    }
}

/// fsync a directory (makes a rename in it durable).
pub fn sync_dir(dir: &Path) -> Result<(), CheckerError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("cannot fsync directory {}", dir.display())))
}

/// Append JSON lines to `path` (created if missing) and fsync.
pub fn append_lines<T: serde::Serialize>(path: &Path, lines: &[T]) -> Result<(), CheckerError> {
    let mut text = String::new();
    for line in lines {
        let json = serde_json::to_string(line).map_err(|e| {
            CheckerError::io(format!("cannot encode a line for {}", path.display()), e.into())
        })?;
        text.push_str(&json);
        text.push('\n');
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(format!("cannot open {}", path.display())))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(io(format!("cannot append to {}", path.display())))
}

/// Where findings go: stdout (JSON lines) and/or a file.
#[derive(Debug)]
pub struct FindingSink {
    /// Also print each finding on stdout.
    pub stdout: bool,
    /// On stdout: JSON lines (else one human line per finding).
    pub json: bool,
    /// Append to this file (fsynced per batch).
    pub file: Option<PathBuf>,
}

impl FindingSink {
    /// Write a batch of findings (no-op when empty).
    pub fn write(&self, records: &[FindingRecord]) -> Result<(), CheckerError> {
        if records.is_empty() {
            return Ok(());
        }
        if let Some(path) = &self.file {
            append_lines(path, records)?;
        }
        if self.stdout {
            let mut out = std::io::stdout().lock();
            for r in records {
                if self.json {
                    if let Ok(line) = serde_json::to_string(r) {
                        let _ = writeln!(out, "{line}");
                    }
                } else {
                    let _ = writeln!(out, "{}", human(&r.finding));
                }
            }
            let _ = out.flush();
        }
        Ok(())
    }
}

/// One human line for a finding: `P1 divergence at 7.0 [node 2] key a: message`.
pub fn human(f: &super::finding::Finding) -> String {
    let mut line = format!("{} {}", f.level.as_str(), f.kind.as_str());
    match (f.revision, f.index) {
        (Some(r), Some(i)) => line.push_str(&format!(" at {r}.{i}")),
        (Some(r), None) => line.push_str(&format!(" at {r}")),
        _ => {}
    }
    if !f.nodes.is_empty() {
        let nodes: Vec<String> = f.nodes.iter().map(u64::to_string).collect();
        line.push_str(&format!(" [node {}]", nodes.join(",")));
    }
    line.push_str(": ");
    line.push_str(&f.message);
    line
}
