//! The history model: events as a client recorded them, and the operations they pair into.
//!
//! A history is a sequence of [`Event`]s in the order they happened (file order is real-time
//! order; `time_ns` is informative only). Each client process runs one operation at a time:
//! an `invoke` event, then at most one completion:
//!
//! - `ok`: the operation took effect, exactly once, between its invocation and completion;
//! - `fail`: the operation did not take effect (it is dropped before checking);
//! - `info`: indeterminate: it may have taken effect at any point after its invocation, or
//!   never. A process that got `info` never invokes again (Jepsen gives the worker a new
//!   process id instead).
//!
//! An invocation with no completion at the end of the history is `Pending` and is treated
//! exactly like `info`.
//!
//! Invariants of a [`History`] (checked by [`History::from_events`], so every parser returns
//! only well-formed histories):
//! - every completion matches the pending invocation of the same process, with the same `f`,
//!   the same key (or none, which inherits the invocation's key) and, for writes and CAS, the
//!   same value (or none);
//! - a process never has two operations pending, and never invokes after an `info`;
//! - values have the shape their `f` demands: a write carries an integer or nil, a CAS a pair
//!   `[expected, new]`, a read nil on invoke and the value read on `ok`.
//!
//! Nemesis events (non-integer processes such as `:nemesis`, or a nil process) are dropped
//! by the parsers and never reach a `History`.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

/// A key of a multi-key history; single-register histories have no key (`None`).
pub type Key = String;

/// A client process id, as Jepsen numbers them (non-negative integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ProcessId(pub u64);

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The type of an event: an invocation or one of the three completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The client sent the request.
    Invoke,
    /// The operation took effect exactly once.
    Ok,
    /// The operation did not take effect.
    Fail,
    /// Indeterminate: the operation may or may not have taken effect.
    Info,
}

impl EventType {
    /// The name used by both input formats (`invoke`, `ok`, `fail`, `info`).
    pub fn name(self) -> &'static str {
        match self {
            EventType::Invoke => "invoke",
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            EventType::Info => "info",
        }
    }

    /// Parses a format name; `None` for anything else.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "invoke" => Some(EventType::Invoke),
            "ok" => Some(EventType::Ok),
            "fail" => Some(EventType::Fail),
            "info" => Some(EventType::Info),
            _ => None,
        }
    }
}

/// The function an operation calls on a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    /// Read the current value.
    Read,
    /// Overwrite the value.
    Write,
    /// Compare-and-set: replace `expected` by `new`, or fail.
    Cas,
}

impl Function {
    /// The name used by both input formats (`read`, `write`, `cas`).
    pub fn name(self) -> &'static str {
        match self {
            Function::Read => "read",
            Function::Write => "write",
            Function::Cas => "cas",
        }
    }

    /// Parses a format name; `None` for anything else.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "read" => Some(Function::Read),
            "write" => Some(Function::Write),
            "cas" => Some(Function::Cas),
            _ => None,
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The value an event carries, as recorded. `Nil` is also "absent".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// No value: a read's invocation, the unset register, or an omitted value.
    Nil,
    /// An integer register value.
    Int(i64),
    /// A CAS argument `[expected, new]`; either side may be nil (the unset register).
    Pair(Option<i64>, Option<i64>),
}

impl Value {
    /// The scalar view: `Nil` is `Some(None)`, `Int(v)` is `Some(Some(v))`, a pair is `None`.
    pub fn scalar(self) -> Option<Option<i64>> {
        match self {
            Value::Nil => Some(None),
            Value::Int(v) => Some(Some(v)),
            Value::Pair(..) => None,
        }
    }
}

/// One line of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// The client process that invoked or completed the operation.
    pub process: ProcessId,
    /// Invocation or completion type.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The function called.
    pub f: Function,
    /// The key, for multi-key histories; a completion without a key inherits its invocation's.
    pub key: Option<Key>,
    /// The recorded value (see [`Value`] and the module docs for the shape per `f`).
    pub value: Value,
    /// Time of the event in nanoseconds since the start of the test, if recorded.
    pub time_ns: Option<u64>,
    /// 1-based line of the event in its source file (programmatic events: their 1-based
    /// position in the history). Every error message names it.
    pub line: usize,
}

/// Index of an operation in [`History::ops`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct OpId(pub usize);

/// What an operation does, with the values that matter to a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "f", rename_all = "lowercase")]
pub enum OpKind {
    /// A read; `value` is what an `ok` read returned (`None`: the unset register). For a read
    /// that did not complete `ok` the value is meaningless and the read is not checked.
    Read {
        /// The value read.
        value: Option<i64>,
    },
    /// A write of `value` (`None` writes the unset state).
    Write {
        /// The value written.
        value: Option<i64>,
    },
    /// Compare-and-set from `expected` to `new`.
    Cas {
        /// The value the register must hold.
        expected: Option<i64>,
        /// The value it holds afterwards.
        new: Option<i64>,
    },
}

impl OpKind {
    /// The function this operation calls.
    pub fn function(&self) -> Function {
        match self {
            OpKind::Read { .. } => Function::Read,
            OpKind::Write { .. } => Function::Write,
            OpKind::Cas { .. } => Function::Cas,
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn show(v: Option<i64>) -> String {
            v.map_or_else(|| "nil".to_owned(), |v| v.to_string())
        }
        match self {
            OpKind::Read { value } => write!(f, "read {}", show(*value)),
            OpKind::Write { value } => write!(f, "write {}", show(*value)),
            OpKind::Cas { expected, new } => {
                write!(f, "cas {}->{}", show(*expected), show(*new))
            }
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Took effect exactly once between invocation and completion.
    Ok,
    /// Did not take effect.
    Fail,
    /// May have taken effect at any point after invocation, or never.
    Info,
    /// Never completed before the history ended: treated like `Info`.
    Pending,
}

impl Outcome {
    /// Whether the operation may or may not have taken effect (`info` or pending).
    pub fn is_indeterminate(self) -> bool {
        matches!(self, Outcome::Info | Outcome::Pending)
    }
}

/// An invocation paired with its completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Op {
    /// Position in [`History::ops`] (operations are ordered by invocation).
    pub id: OpId,
    /// The process that ran it.
    pub process: ProcessId,
    /// Its key (`None` in single-register histories).
    pub key: Option<Key>,
    /// What it did; for an `ok` read, the value read.
    pub kind: OpKind,
    /// How it ended.
    pub outcome: Outcome,
    /// Index of its invocation in [`History::events`].
    pub invoke_event: usize,
    /// Index of its completion in [`History::events`], if it completed.
    pub complete_event: Option<usize>,
}

/// Why a sequence of events is not a well-formed history. Every variant names the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// A completion arrived for a process with nothing pending.
    #[error("line {line}: process {process} completed an operation it never invoked")]
    CompletionWithoutInvoke {
        /// Line of the completion.
        line: usize,
        /// The process.
        process: ProcessId,
    },
    /// A process invoked while its previous operation was still pending.
    #[error(
        "line {line}: process {process} invoked again while its operation from line \
         {pending_line} is still pending"
    )]
    DoubleInvoke {
        /// Line of the second invocation.
        line: usize,
        /// The process.
        process: ProcessId,
        /// Line of the pending invocation.
        pending_line: usize,
    },
    /// A process invoked after one of its operations ended with `info`.
    #[error(
        "line {line}: process {process} invoked after its operation ended with info on line \
         {info_line} (a process that got info never invokes again)"
    )]
    InvokeAfterInfo {
        /// Line of the invocation.
        line: usize,
        /// The process.
        process: ProcessId,
        /// Line of the `info` completion.
        info_line: usize,
    },
    /// A completion disagrees with its invocation about `f`, the key or the value.
    #[error(
        "line {line}: completion does not match its invocation on line {invoke_line}: {detail}"
    )]
    Mismatch {
        /// Line of the completion.
        line: usize,
        /// Line of the invocation.
        invoke_line: usize,
        /// What differs.
        detail: String,
    },
    /// A value does not have the shape its `f` demands.
    #[error("line {line}: {detail}")]
    BadValue {
        /// Line of the event.
        line: usize,
        /// What is wrong.
        detail: String,
    },
}

impl HistoryError {
    /// The line the error is about.
    pub fn line(&self) -> usize {
        match self {
            HistoryError::CompletionWithoutInvoke { line, .. }
            | HistoryError::DoubleInvoke { line, .. }
            | HistoryError::InvokeAfterInfo { line, .. }
            | HistoryError::Mismatch { line, .. }
            | HistoryError::BadValue { line, .. } => *line,
        }
    }
}

/// A validated history: its events and the operations they pair into.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    events: Vec<Event>,
    ops: Vec<Op>,
}

/// Per-process pairing state while validating.
enum ProcessState {
    /// The operation at this index of `ops` is pending.
    Pending(usize),
    /// Between operations.
    Idle,
    /// Got `info` on this line: must never invoke again.
    Crashed(usize),
}

impl History {
    /// Validates `events` (see the module invariants) and pairs them into operations.
    pub fn from_events(events: Vec<Event>) -> Result<Self, HistoryError> {
        let mut ops: Vec<Op> = Vec::new();
        let mut processes: HashMap<ProcessId, ProcessState> = HashMap::new();
        for (index, event) in events.iter().enumerate() {
            let state = processes.entry(event.process).or_insert(ProcessState::Idle);
            match (event.kind, &*state) {
                (EventType::Invoke, ProcessState::Pending(op)) => {
                    return Err(HistoryError::DoubleInvoke {
                        line: event.line,
                        process: event.process,
                        pending_line: events[ops[*op].invoke_event].line,
                    });
                }
                (EventType::Invoke, ProcessState::Crashed(info_line)) => {
                    return Err(HistoryError::InvokeAfterInfo {
                        line: event.line,
                        process: event.process,
                        info_line: *info_line,
                    });
                }
                (EventType::Invoke, ProcessState::Idle) => {
                    *state = ProcessState::Pending(ops.len());
                    ops.push(invocation(event, index, OpId(ops.len()))?);
                }
                (_, ProcessState::Idle | ProcessState::Crashed(_)) => {
                    return Err(HistoryError::CompletionWithoutInvoke {
                        line: event.line,
                        process: event.process,
                    });
                }
                (kind, ProcessState::Pending(op)) => {
                    let op = &mut ops[*op];
                    complete(op, &events[op.invoke_event], event, index)?;
                    *state = if kind == EventType::Info {
                        ProcessState::Crashed(event.line)
                    } else {
                        ProcessState::Idle
                    };
                }
            }
        }
        Ok(History { events, ops })
    }

    /// The events, in history order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The operations, in invocation order; `ops()[i].id == OpId(i)`.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Whether any operation carries a key (the history is multi-key).
    pub fn has_keys(&self) -> bool {
        self.ops.iter().any(|op| op.key.is_some())
    }
}

fn bad_value(event: &Event, detail: impl Into<String>) -> HistoryError {
    HistoryError::BadValue { line: event.line, detail: detail.into() }
}

/// Builds the operation an invocation starts.
fn invocation(event: &Event, index: usize, id: OpId) -> Result<Op, HistoryError> {
    let kind = match (event.f, event.value) {
        (Function::Read, Value::Nil | Value::Int(_)) => OpKind::Read { value: None },
        (Function::Write, Value::Nil) => OpKind::Write { value: None },
        (Function::Write, Value::Int(v)) => OpKind::Write { value: Some(v) },
        (Function::Cas, Value::Pair(expected, new)) => OpKind::Cas { expected, new },
        (Function::Read, Value::Pair(..)) => {
            return Err(bad_value(event, "a read's value must be nil or an integer"));
        }
        (Function::Write, Value::Pair(..)) => {
            return Err(bad_value(event, "a write's value must be an integer or nil"));
        }
        (Function::Cas, _) => {
            return Err(bad_value(event, "a cas value must be a pair [expected, new]"));
        }
    };
    Ok(Op {
        id,
        process: event.process,
        key: event.key.clone(),
        kind,
        outcome: Outcome::Pending,
        invoke_event: index,
        complete_event: None,
    })
}

/// Applies a completion to its pending operation.
fn complete(op: &mut Op, invoke: &Event, event: &Event, index: usize) -> Result<(), HistoryError> {
    let mismatch = |detail: String| HistoryError::Mismatch {
        line: event.line,
        invoke_line: invoke.line,
        detail,
    };
    if event.f != invoke.f {
        return Err(mismatch(format!("f is {} but was invoked as {}", event.f, invoke.f)));
    }
    if event.key.is_some() && event.key != invoke.key {
        return Err(mismatch(format!(
            "key {:?} but was invoked with key {:?}",
            event.key, invoke.key
        )));
    }
    match (op.kind, event.kind) {
        (OpKind::Read { .. }, EventType::Ok) => match event.value.scalar() {
            Some(value) => op.kind = OpKind::Read { value },
            None => return Err(bad_value(event, "a read's value must be nil or an integer")),
        },
        // A failed or indeterminate read constrains nothing: its value is not used.
        (OpKind::Read { .. }, _) => {}
        (OpKind::Write { value }, _) => match event.value {
            Value::Nil => {}
            Value::Int(v) if Some(v) == value => {}
            other => {
                return Err(mismatch(format!(
                    "value {other:?} but the write was invoked with {value:?}"
                )))
            }
        },
        (OpKind::Cas { expected, new }, _) => match event.value {
            Value::Nil => {}
            Value::Pair(e, n) if e == expected && n == new => {}
            other => {
                return Err(mismatch(format!(
                    "value {other:?} but the cas was invoked with [{expected:?}, {new:?}]"
                )))
            }
        },
    }
    op.outcome = match event.kind {
        EventType::Ok => Outcome::Ok,
        EventType::Fail => Outcome::Fail,
        EventType::Info => Outcome::Info,
        EventType::Invoke => unreachable!("complete() is only called for completions"),
    };
    op.complete_event = Some(index);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds an event for tests: `line` is its 1-based position, set by [`history`].
    pub(crate) fn ev(process: u64, kind: EventType, f: Function, value: Value) -> Event {
        Event { process: ProcessId(process), kind, f, key: None, value, time_ns: None, line: 0 }
    }

    /// Numbers the events' lines and validates them.
    pub(crate) fn history(mut events: Vec<Event>) -> Result<History, HistoryError> {
        for (i, e) in events.iter_mut().enumerate() {
            e.line = i + 1;
        }
        History::from_events(events)
    }

    use EventType::{Fail, Info, Invoke, Ok as OkT};
    use Function::{Cas, Read, Write};

    #[test]
    fn pairs_invocations_with_their_completions() {
        let h = history(vec![
            ev(0, Invoke, Write, Value::Int(1)),
            ev(1, Invoke, Read, Value::Nil),
            ev(0, OkT, Write, Value::Int(1)),
            ev(1, OkT, Read, Value::Int(1)),
            ev(2, Invoke, Cas, Value::Pair(Some(1), Some(2))),
            ev(2, Fail, Cas, Value::Pair(Some(1), Some(2))),
        ])
        .expect("valid history");
        let ops = h.ops();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].kind, OpKind::Write { value: Some(1) });
        assert_eq!(ops[0].complete_event, Some(2));
        assert_eq!(ops[1].kind, OpKind::Read { value: Some(1) });
        assert_eq!(ops[1].outcome, Outcome::Ok);
        assert_eq!(ops[2].outcome, Outcome::Fail);
    }

    #[test]
    fn invocation_without_completion_is_pending() {
        let h = history(vec![ev(0, Invoke, Write, Value::Int(1))]).expect("valid");
        assert_eq!(h.ops()[0].outcome, Outcome::Pending);
        assert!(h.ops()[0].outcome.is_indeterminate());
    }

    #[test]
    fn completion_without_invoke_is_rejected_with_its_line() {
        let err = history(vec![
            ev(0, Invoke, Write, Value::Int(1)),
            ev(0, OkT, Write, Value::Int(1)),
            ev(0, OkT, Write, Value::Int(1)),
        ])
        .expect_err("invalid");
        assert_eq!(err.line(), 3);
        assert!(matches!(err, HistoryError::CompletionWithoutInvoke { .. }));
    }

    #[test]
    fn double_invoke_on_a_process_is_rejected() {
        let err =
            history(vec![ev(4, Invoke, Write, Value::Int(1)), ev(4, Invoke, Read, Value::Nil)])
                .expect_err("invalid");
        assert_eq!(
            err,
            HistoryError::DoubleInvoke { line: 2, process: ProcessId(4), pending_line: 1 }
        );
    }

    #[test]
    fn invoking_after_info_is_rejected() {
        let err = history(vec![
            ev(1, Invoke, Write, Value::Int(1)),
            ev(1, Info, Write, Value::Int(1)),
            ev(1, Invoke, Read, Value::Nil),
        ])
        .expect_err("invalid");
        assert!(matches!(err, HistoryError::InvokeAfterInfo { line: 3, info_line: 2, .. }));
    }

    #[test]
    fn completion_with_another_function_is_rejected() {
        let err =
            history(vec![ev(1, Invoke, Write, Value::Int(1)), ev(1, OkT, Read, Value::Int(1))])
                .expect_err("invalid");
        assert!(matches!(err, HistoryError::Mismatch { line: 2, .. }));
    }

    #[test]
    fn completion_with_another_write_value_is_rejected() {
        let err =
            history(vec![ev(1, Invoke, Write, Value::Int(1)), ev(1, OkT, Write, Value::Int(2))])
                .expect_err("invalid");
        assert!(matches!(err, HistoryError::Mismatch { line: 2, .. }));
    }

    #[test]
    fn cas_without_a_pair_is_rejected() {
        let err = history(vec![ev(1, Invoke, Cas, Value::Int(1))]).expect_err("invalid");
        assert!(matches!(err, HistoryError::BadValue { line: 1, .. }));
    }

    #[test]
    fn completion_without_key_inherits_the_invocation_key() {
        let mut invoke = ev(1, Invoke, Write, Value::Int(1));
        invoke.key = Some("k".into());
        let h = history(vec![invoke, ev(1, OkT, Write, Value::Nil)]).expect("valid");
        assert_eq!(h.ops()[0].key.as_deref(), Some("k"));
        assert!(h.has_keys());
    }

    #[test]
    fn completion_with_another_key_is_rejected() {
        let mut invoke = ev(1, Invoke, Write, Value::Int(1));
        invoke.key = Some("a".into());
        let mut done = ev(1, OkT, Write, Value::Int(1));
        done.key = Some("b".into());
        let err = history(vec![invoke, done]).expect_err("invalid");
        assert!(matches!(err, HistoryError::Mismatch { line: 2, .. }));
    }
}
