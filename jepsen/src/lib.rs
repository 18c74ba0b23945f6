//! meridian-jepsen: a linearizability checker for key-value histories, and the harness
//! that runs Meridian clusters under faults and checks every history ([`harness`]).
//!
//! The checker checks any history of registers (read / write / compare-and-set, one
//! register per key), whether recorded by Meridian's harness or by Jepsen / Knossos; its
//! modules do not depend on the `meridian` crate (only [`harness`] does).
//!
//! Layers, each depending only on those above it:
//!
//! | module | role |
//! |---|---|
//! | [`history`] | events, operations, pairing and validation (pure data) |
//! | [`model`] | sequential specifications: register, CAS register |
//! | [`format`](mod@format) | JSON lines and EDN readers / writers → [`History`] |
//! | `wgl` (private) | the Wing–Gong–Lowe search for one key |
//! | [`check`] | per-key partitioning, parallel search, budget, failure analysis |
//! | [`report`](mod@report) | results as JSON and as a self-contained HTML timeline |
//! | [`generate`] | synthetic histories with a known verdict (tests, benchmarks) |
//! | [`harness`] | workloads, nemeses, runs against real node processes, reports |
//!
//! Everything here is synchronous and pure except [`check`], which runs keys on scoped
//! threads and reads the clock for its deadline. The binary (`src/main.rs`) only parses
//! arguments, reads the file, calls [`check_history`] and writes reports.
//!
//! The guarantee: a verdict of linearizable or not linearizable is always exact; when the
//! budget runs out the answer is [`Verdict::Unknown`], never a guess.
//!
//! ```
//! use meridian_jepsen::{check_history, parse_jsonl, Budget, ModelKind, Verdict};
//!
//! let history = parse_jsonl(
//!     r#"{"process":0,"type":"invoke","f":"write","value":1}
//! {"process":0,"type":"ok","f":"write","value":1}
//! {"process":1,"type":"invoke","f":"read","value":null}
//! {"process":1,"type":"ok","f":"read","value":null}"#,
//! )?;
//! let result = check_history(&history, ModelKind::CasRegister, Budget::default())?;
//! assert_eq!(result.verdict, Verdict::NotLinearizable);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod check;
pub mod format;
pub mod generate;
pub mod harness;
pub mod history;
pub mod model;
pub mod report;
mod wgl;

pub use check::{
    check_history, Budget, CheckError, CheckResult, Failure, KeyResult, Prefix, Verdict,
};
pub use format::edn::{parse_edn, write_edn};
pub use format::jsonl::{parse_jsonl, write_jsonl};
pub use format::{parse_history, Format, ParseError};
pub use history::{
    Event, EventType, Function, History, HistoryError, Key, Op, OpId, OpKind, Outcome, ProcessId,
    Value,
};
pub use model::ModelKind;
pub use report::{render_html, render_json, report};
pub use wgl::UnknownReason;
