//! Memory allocator settings for the `meridian` binary, which uses mimalloc as its
//! global allocator (glibc malloc was ~12% of a node's CPU under write load).
//!
//! mimalloc's defaults keep freed memory for reuse: eagerly committed arenas and a
//! delayed purge made a node's RSS about 1.5-2x glibc's after a write benchmark
//! (~150 vs ~82 MiB per node, 20k keys). mimalloc reads its options from the
//! environment when the process starts, before `main`, and the crate forbids `unsafe`
//! (so no `mi_option_set`): a node process therefore re-executes itself once, same pid,
//! with the two options set, unless the operator set them.

use std::ffi::OsStr;

/// mimalloc options a node runs with (each only if not set in the environment).
pub const NODE_OPTIONS: [(&str, &str); 2] =
    [("MIMALLOC_ARENA_EAGER_COMMIT", "0"), ("MIMALLOC_PURGE_DELAY", "0")];

/// The options of [`NODE_OPTIONS`] missing from the environment `get` describes.
pub fn missing_options(
    get: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Vec<(&'static str, &'static str)> {
    NODE_OPTIONS.iter().copied().filter(|(k, _)| get(k).is_none()).collect()
}

/// For `meridian node ...`: re-execute this process with [`NODE_OPTIONS`] in its
/// environment if any is missing. Returns only if nothing was needed or the exec
/// failed (the node then runs with mimalloc's defaults: more memory, same behaviour).
pub fn reexec_node_with_options() {
    if std::env::args_os().nth(1).as_deref() != Some(OsStr::new("node")) {
        return;
    }
    let missing = missing_options(|k| std::env::var_os(k));
    if missing.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    use std::os::unix::process::CommandExt;
    let err =
        std::process::Command::new(exe).args(std::env::args_os().skip(1)).envs(missing).exec();
    eprintln!("note: could not re-execute with mimalloc options ({err}); continuing");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unset_options_are_added() {
        let none = missing_options(|_| None);
        assert_eq!(none, NODE_OPTIONS.to_vec());
        let set = |k: &str| (k == "MIMALLOC_PURGE_DELAY").then(|| "5".into());
        assert_eq!(missing_options(set), vec![("MIMALLOC_ARENA_EAGER_COMMIT", "0")]);
    }
}
