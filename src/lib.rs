//! Meridian: a strongly consistent, multi-region key-value store.
//!
//! Layers, from the bottom up (an arrow means "may use"):
//!
//! ```text
//! cli -> {client, cluster, server}
//! server -> raft -> storage -> {record, hlc}
//! {raft, client} -> coalesce (write coalescing for HTTP/2 connections)
//! client -> pb
//! ```
//!
//! Nothing below `server` knows about gRPC types except `raft::network`, the Raft
//! transport. The client never depends on server internals: applications embed it alone.

pub mod pb;

pub mod alloc;
pub mod checker;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod coalesce;
pub mod config;
pub mod hlc;
pub mod record;

/// Crate version plus the git commit it was built from.
pub const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("MERIDIAN_GIT_COMMIT"), ")");
pub mod error;
pub mod raft;
pub mod server;
pub mod storage;
pub mod tls;
