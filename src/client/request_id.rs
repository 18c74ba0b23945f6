//! Request ids: the idempotency keys of writes.
//!
//! A generated id is 128 random bits as 32 lowercase hex digits, drawn from the
//! thread-local CSPRNG (seeded by the OS), so two clients never need to coordinate.
//! One id is generated per logical write and reused by every attempt of it; the
//! server's exactly-once table turns a repeated id into a replay of the original
//! response. A caller-supplied id must be 1..=[`MAX_REQUEST_ID_BYTES`] printable ASCII
//! characters (no spaces), so it survives logs and metadata unchanged.

use rand::Rng;

/// Length of a generated request id, characters.
pub const GENERATED_REQUEST_ID_CHARS: usize = 32;
/// Longest request id accepted from a caller, bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// A fresh random request id: 32 lowercase hex digits (128 bits).
pub fn generate() -> String {
    let bits: u128 = rand::thread_rng().gen();
    format!("{bits:032x}")
}

/// Check a caller-supplied request id; the error says what is wrong.
pub fn validate(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_REQUEST_ID_BYTES {
        return Err(format!(
            "request id must be 1..={MAX_REQUEST_ID_BYTES} bytes, got {}",
            id.len()
        ));
    }
    if let Some(c) = id.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!("request id must be printable ASCII without spaces, found {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn generated_ids_are_32_lowercase_hex_digits() {
        for _ in 0..100 {
            let id = generate();
            assert_eq!(id.len(), GENERATED_REQUEST_ID_CHARS, "{id}");
            assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{id}");
            validate(&id).expect("a generated id is valid");
        }
    }

    #[test]
    fn generated_ids_are_unique() {
        const COUNT: usize = 100_000;
        let ids: HashSet<String> = (0..COUNT).map(|_| generate()).collect();
        assert_eq!(ids.len(), COUNT);
    }

    #[test]
    fn caller_ids_are_checked() {
        validate("order-42/attempt:1").expect("valid");
        assert!(validate("").is_err());
        assert!(validate(&"x".repeat(MAX_REQUEST_ID_BYTES + 1)).is_err());
        assert!(validate("has space").is_err());
        assert!(validate("naïve").is_err());
    }
}
