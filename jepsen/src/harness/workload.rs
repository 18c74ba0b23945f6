//! What one client operation looks like to the recorder, shared by the workloads.
//!
//! An [`OpContext`] is one logical process bound to one node: it records the
//! invocation, runs the operation (one attempt, [`super::client`] semantics) and records
//! the completion. [`Outcome::Info`] tells the worker to continue as a new process.

use std::time::Duration;

use meridian::pb::v1::kv_client::KvClient;
use serde_json::Value as Json;
use tonic::transport::Channel;

use super::client::Completion;
use super::recorder::{Actor, Record, Recorder};
use crate::history::EventType;

/// How an operation ended, as the worker needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Completed `ok`.
    Ok,
    /// Completed `fail`.
    Fail,
    /// Completed `info`: the process is done, the worker takes a new id.
    Info,
}

/// One logical process on one node, for one operation.
pub struct OpContext<'a> {
    /// The history.
    pub recorder: &'a Recorder,
    /// Process id.
    pub process: u64,
    /// The node the process is bound to.
    pub node: u64,
    /// A client of that node.
    pub kv: &'a mut KvClient<Channel>,
    /// Per-operation timeout.
    pub timeout: Duration,
}

impl OpContext<'_> {
    fn record(
        &self,
        kind: EventType,
        f: &str,
        key: Option<&str>,
        value: Json,
        error: Option<String>,
    ) {
        self.recorder.push(Record {
            actor: Actor::Client(self.process),
            kind,
            f: f.to_string(),
            key: key.map(str::to_string),
            value,
            time_ns: 0,
            error,
            node: Some(self.node),
        });
    }

    /// Record the invocation of `f` on `key` with `value`.
    pub fn invoke(&self, f: &str, key: Option<&str>, value: Json) {
        self.record(EventType::Invoke, f, key, value, None);
    }

    /// Record the completion; `invoked` is the invocation's value, repeated on `fail`
    /// and `info` (an `ok` carries the completion's own value).
    pub fn complete(
        &self,
        f: &str,
        key: Option<&str>,
        invoked: Json,
        completion: Completion,
    ) -> Outcome {
        match completion {
            Completion::Ok(value) => {
                self.record(EventType::Ok, f, key, value, None);
                Outcome::Ok
            }
            Completion::Fail(why) => {
                self.record(EventType::Fail, f, key, invoked, Some(why));
                Outcome::Fail
            }
            Completion::Info(why) => {
                self.record(EventType::Info, f, key, invoked, Some(why));
                Outcome::Info
            }
        }
    }
}

/// Parse a stored decimal integer value.
pub fn parse_int(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_decimal_strings() {
        assert_eq!(parse_int(b"-42"), Some(-42));
        assert_eq!(parse_int(b"4x"), None);
        assert_eq!(parse_int(&[0xff]), None);
    }
}
