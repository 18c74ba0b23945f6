//! Node metrics: the Prometheus exporter on `metrics_addr` and the Raft gauges.
//!
//! Every module records through the `metrics` facade; without `metrics_addr` no
//! recorder is installed and recording costs next to nothing. The exporter serves
//! `GET /metrics` (Prometheus text). Histograms named `*_seconds` get
//! [`LATENCY_BUCKETS_SECONDS`] so `histogram_quantile` works in alerts.
//!
//! Series of this module (every series is documented in docs/OPERATIONS.md):
//! `meridian_raft_term`, `meridian_raft_is_leader`, `meridian_raft_leader_changes_total`,
//! `meridian_raft_commit_index`, `meridian_raft_applied_index`,
//! `meridian_raft_apply_lag`, `meridian_raft_last_log_index`,
//! `meridian_raft_replication_lag{peer}` (leader only), `meridian_node_info{id,region,version}`.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use openraft::async_runtime::watch::WatchReceiver;

use crate::raft::MeridianRaft;

/// Histogram buckets of every `*_seconds` series, seconds (100 µs .. 10 s).
pub const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// How often the Raft gauges are refreshed.
pub const RAFT_METRICS_INTERVAL: Duration = Duration::from_millis(500);

/// Install the global recorder and serve `/metrics` on `addr`.
pub fn install_exporter(addr: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS_SECONDS)
        .map_err(|e| format!("metrics buckets: {e}"))?
        .install()
        .map_err(|e| format!("metrics endpoint on {addr}: {e}"))
}

/// Refresh the Raft gauges until `stop` turns true.
pub async fn run_raft_metrics(
    raft: MeridianRaft,
    id: u64,
    region: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    metrics::gauge!(
        "meridian_node_info",
        "id" => id.to_string(),
        "region" => region,
        "version" => crate::VERSION
    )
    .set(1.0);
    let mut last_leader: Option<u64> = None;
    let mut tick = tokio::time::interval(RAFT_METRICS_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        let m = raft.metrics().borrow_watched().clone();
        if m.current_leader != last_leader {
            if m.current_leader.is_some() {
                metrics::counter!("meridian_raft_leader_changes_total").increment(1);
            }
            last_leader = m.current_leader;
        }
        let commit = m.cluster_committed.or(m.local_committed).map_or(0, |l| l.index);
        let applied = m.last_applied.map_or(0, |l| l.index);
        let last_log = m.last_log_index.unwrap_or(0);
        metrics::gauge!("meridian_raft_term").set(m.current_term as f64);
        metrics::gauge!("meridian_raft_is_leader").set(if m.current_leader == Some(id) {
            1.0
        } else {
            0.0
        });
        metrics::gauge!("meridian_raft_commit_index").set(commit as f64);
        metrics::gauge!("meridian_raft_applied_index").set(applied as f64);
        metrics::gauge!("meridian_raft_apply_lag").set(commit.saturating_sub(applied) as f64);
        metrics::gauge!("meridian_raft_last_log_index").set(last_log as f64);
        if let Some(replication) = &m.replication {
            for (peer, matched) in replication.iter() {
                if *peer == id {
                    continue;
                }
                let matched = matched.as_ref().map_or(0, |l| l.index);
                metrics::gauge!("meridian_raft_replication_lag", "peer" => peer.to_string())
                    .set(last_log.saturating_sub(matched) as f64);
            }
        }
    }
}

/// Counts one in-flight proposal for as long as it lives
/// (`meridian_raft_proposals_in_flight`, the proposal queue depth).
#[derive(Debug)]
pub struct InFlight(());

impl InFlight {
    /// Start counting.
    pub fn start() -> Self {
        metrics::gauge!("meridian_raft_proposals_in_flight").increment(1.0);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("meridian_raft_proposals_in_flight").decrement(1.0);
    }
}
