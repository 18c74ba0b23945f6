//! Security and observability against real node processes (issue #9): a TLS cluster
//! end to end (client library and CLI), every kind of refusal with its code and
//! nothing written, per-identity rate limits with client back-off, trace ids in the
//! leader's and followers' logs, and /metrics moving under load.
//!
//! The nodes log at `info,meridian=debug` (RUST_LOG is set before any cluster starts
//! and inherited by the node processes) so the per-entry trace lines are written.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::time::{Duration, Instant};

use common::{pb, sample, scrape, TestCluster, MERIDIAN};
use meridian::client::{Client, ClientConfig, ClientTlsConfig, RetryConfig};
use meridian::cluster::certs::{self, CertKind, CertsPlan, DevCa};
use meridian::cluster::ManifestTls;
use pb::kv_client::KvClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig as TonicTls, Endpoint, Identity};
use tonic::Code;

const ROOT_TOKEN: &str = "root-token-0123456789abcdef";
const ALICE_TOKEN: &str = "alice-token-0123456789abcdef";
const BOB_TOKEN: &str = "bob-token-0123456789abcdef";
const READER_TOKEN: &str = "reader-token-0123456789abcdef";
const CAROL_TOKEN: &str = "carol-token-0123456789abcdef";
/// Longest a polled condition may take.
const DEADLINE: Duration = Duration::from_secs(30);

const TOKENS: &str = r#"
[[principal]]
identity = "root"
token = "root-token-0123456789abcdef"
roles = ["admin"]
prefixes = [""]

[[principal]]
identity = "admin"
roles = ["admin"]
prefixes = [""]

[[principal]]
identity = "alice"
token = "alice-token-0123456789abcdef"
roles = ["read", "write"]
prefixes = ["app/"]

[[principal]]
identity = "bob"
token = "bob-token-0123456789abcdef"
roles = ["read", "write"]
prefixes = ["bob/"]

[[principal]]
identity = "carol"
token = "carol-token-0123456789abcdef"
roles = ["read", "write"]
prefixes = ["carol/"]

[[principal]]
identity = "reader"
token = "reader-token-0123456789abcdef"
roles = ["read"]
prefixes = ["app/"]
"#;

fn debug_logs() {
    static ONCE: Once = Once::new();
    // Every test of this binary sets the same value before starting nodes.
    ONCE.call_once(|| std::env::set_var("RUST_LOG", "info,meridian=debug,openraft=warn"));
}

/// Certificates (CA, node-1..3, admin, alice, mallory) and the tokens file.
fn material() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = CertsPlan {
        dir: dir.path().to_path_buf(),
        nodes: (1..=3).map(|i| format!("node-{i}")).collect(),
        clients: vec!["admin".into(), "alice".into(), "mallory".into()],
        new_ca: false,
    };
    certs::init(&plan).expect("certs init");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, TOKENS).expect("tokens file");
    (dir, tokens)
}

async fn secure_cluster(dir: &Path, tokens: &Path, extra: &[&str], metrics: bool) -> TestCluster {
    debug_logs();
    let mut options = common::options();
    options.tls = Some(ManifestTls { dir: dir.to_path_buf(), require_client_cert: true });
    options.extra_args = ["--tokens-file", tokens.to_str().expect("utf-8 path")]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    options.metrics = metrics;
    TestCluster::start(3, options).await.expect("TLS cluster starts")
}

/// A raw TLS channel to `addr` trusting `ca_dir`'s CA, presenting `client` (dir, name).
fn channel(addr: std::net::SocketAddr, ca_dir: &Path, client: Option<(&Path, &str)>) -> Channel {
    let ca = std::fs::read(ca_dir.join("ca.pem")).expect("ca");
    let mut tls =
        TonicTls::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    if let Some((dir, name)) = client {
        let (cert, key) = certs::cert_paths(dir, name);
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).expect("cert"),
            std::fs::read(key).expect("key"),
        ));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls config")
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().expect("ascii"));
    }
    r
}

fn put(key: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        request_id: common::request_id(),
        ..Default::default()
    }
}

/// The library client as `name` (certificate) with `token`.
fn client(cluster: &TestCluster, dir: &Path, name: &str, token: Option<&str>) -> Client {
    let endpoints =
        cluster.ids().into_iter().map(|id| cluster.api_addr(id).expect("addr").to_string());
    let mut config = ClientConfig::with_endpoints(endpoints);
    let (cert, key) = certs::cert_paths(dir, name);
    config.tls = Some(ClientTlsConfig {
        ca_file: Some(dir.join("ca.pem")),
        cert_file: Some(cert),
        key_file: Some(key),
        domain: None,
    });
    config.token = token.map(str::to_string);
    config.retry = RetryConfig { jitter_seed: Some(9), ..RetryConfig::default() };
    Client::connect(config).expect("client")
}

/// Wait until `key` reads as absent through the root client (linearizable).
async fn assert_absent(root: &Client, key: &str) {
    let r = root.get(key.as_bytes().to_vec(), Default::default()).await.expect("root reads");
    assert!(!r.found, "{key} must not have been written: {:?}", r.record);
}

fn run_cli(args: &[&str]) -> std::process::Output {
    Command::new(MERIDIAN).args(args).output().expect("meridian runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_serves_authorized_clients_and_refuses_everyone_else() {
    let (dir, tokens) = material();
    let d = dir.path();
    let cluster = secure_cluster(d, &tokens, &[], false).await;
    let leader = cluster.leader().await.expect("leader");
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("follower");

    // End to end through the library: put, get, txn as root (admin cert + token).
    let root = client(&cluster, d, "admin", Some(ROOT_TOKEN));
    root.put("app/one", "1").await.expect("root put");
    let got = root.get("app/one", Default::default()).await.expect("root get");
    assert_eq!(got.record.expect("record").value, b"1");
    let txn = meridian::client::Txn::new()
        .then(meridian::client::txn::put("app/two", "2"))
        .then(meridian::client::txn::get("app/one"));
    let t = root.txn(txn).await.expect("txn");
    assert!(t.succeeded);

    // Alice through a follower: forwarded to the leader with her identity.
    let follower_addr = cluster.api_addr(follower).expect("addr");
    let mut via_follower = KvClient::new(channel(follower_addr, d, Some((d, "alice"))));
    via_follower
        .put(with_token(put("app/alice"), Some(ALICE_TOKEN)))
        .await
        .expect("alice via follower");

    // The CLI with --tls-dir and --token.
    let endpoints: String = cluster
        .ids()
        .into_iter()
        .map(|id| cluster.api_addr(id).expect("addr").to_string())
        .collect::<Vec<_>>()
        .join(",");
    let dir_s = d.to_str().expect("utf-8");
    let common = ["kv", "--endpoints", &endpoints, "--tls-dir", dir_s, "--token", ROOT_TOKEN];
    let out = run_cli(&[&common[..], &["put", "app/cli", "from-cli"]].concat());
    assert!(out.status.success(), "cli put: {}", String::from_utf8_lossy(&out.stderr));
    let out = run_cli(&[&common[..], &["get", "app/cli"]].concat());
    assert!(String::from_utf8_lossy(&out.stdout).contains("from-cli"), "{out:?}");
    let out = run_cli(&[
        "kv",
        "--endpoints",
        &endpoints,
        "--tls-dir",
        dir_s,
        "--token",
        READER_TOKEN,
        "put",
        "app/cli2",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1), "permission denied exits 1: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("PERMISSION_DENIED"), "{out:?}");
    let leader_s = cluster.api_addr(leader).expect("addr").to_string();
    let out = run_cli(&[
        "binlog",
        "tail",
        "--endpoint",
        &leader_s,
        "--tls-dir",
        dir_s,
        "--token",
        ROOT_TOKEN,
        "--from",
        "1",
        "--limit",
        "1",
    ]);
    assert!(out.status.success(), "binlog tail: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"revision\""), "{out:?}");

    // A client that does not use TLS is told so, not only "h2 protocol error".
    let out = run_cli(&["kv", "--endpoints", &endpoints, "--timeout", "5s", "get", "app/cli"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("if it serves TLS"), "{out:?}");

    let leader_addr = cluster.api_addr(leader).expect("addr");
    // 1. No client certificate (required): UNAUTHENTICATED.
    let mut no_cert = KvClient::new(channel(leader_addr, d, None));
    let s =
        no_cert.put(with_token(put("app/nocert"), Some(ROOT_TOKEN))).await.expect_err("no cert");
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert!(s.message().contains("client certificate"), "{s:?}");
    // 2. A certificate from another CA: the TLS handshake fails.
    let other = tempfile::tempdir().expect("tempdir");
    certs::init(&CertsPlan {
        dir: other.path().to_path_buf(),
        nodes: vec![],
        clients: vec!["alice".into()],
        new_ca: true,
    })
    .expect("other CA");
    let mut foreign = KvClient::new(channel(leader_addr, d, Some((other.path(), "alice"))));
    let s = foreign
        .put(with_token(put("app/foreign"), Some(ROOT_TOKEN)))
        .await
        .expect_err("foreign CA");
    assert_handshake_refused(&s);
    // 3. An expired certificate signed by the right CA: the handshake fails.
    let expired_dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(d.join("ca.pem"), expired_dir.path().join("ca.pem")).expect("copy ca");
    let now = time::OffsetDateTime::now_utc();
    DevCa::load(d)
        .expect("ca")
        .issue_with_validity(
            expired_dir.path(),
            "alice",
            CertKind::Client,
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        )
        .expect("expired cert");
    let mut expired = KvClient::new(channel(leader_addr, d, Some((expired_dir.path(), "alice"))));
    let s =
        expired.put(with_token(put("app/expired"), Some(ALICE_TOKEN))).await.expect_err("expired");
    assert_handshake_refused(&s);
    // 4. A valid certificate of an unknown identity and no token: UNAUTHENTICATED.
    let mut mallory = KvClient::new(channel(leader_addr, d, Some((d, "mallory"))));
    let s = mallory.put(with_token(put("app/mallory"), None)).await.expect_err("no token");
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    let s = mallory
        .put(with_token(put("app/mallory"), Some("not-a-known-token-000000")))
        .await
        .expect_err("bad token");
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    // 5. A token without rights on the prefix, or without the role: PERMISSION_DENIED.
    let mut alice = KvClient::new(channel(leader_addr, d, Some((d, "alice"))));
    let s = alice.put(with_token(put("other/x"), Some(ALICE_TOKEN))).await.expect_err("prefix");
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("alice") && s.message().contains("write"), "{s:?}");
    let s = alice.put(with_token(put("app/reader"), Some(READER_TOKEN))).await.expect_err("role");
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let range = pb::RangeRequest { prefix: b"other/".to_vec(), ..Default::default() };
    let s = alice.range(with_token(range, Some(ALICE_TOKEN))).await.expect_err("range");
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    // 6. A client forging the forwarded identity: PERMISSION_DENIED.
    let mut forged = with_token(put("app/forged"), Some(ALICE_TOKEN));
    forged.metadata_mut().insert("x-meridian-identity", "root".parse().expect("ascii"));
    let s = alice.put(forged).await.expect_err("forged identity");
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    // 7. Admin RPCs need admin.
    let mut cluster_api =
        pb::cluster_client::ClusterClient::new(channel(leader_addr, d, Some((d, "alice"))));
    let s = cluster_api
        .transfer_leader(with_token(pb::TransferLeaderRequest { to: follower }, Some(ALICE_TOKEN)))
        .await
        .expect_err("admin only");
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    cluster_api
        .status(with_token(pb::StatusRequest {}, Some(ALICE_TOKEN)))
        .await
        .expect("status for anyone known");

    // Nothing refused was written.
    for key in [
        "app/nocert",
        "app/foreign",
        "app/expired",
        "app/mallory",
        "other/x",
        "app/reader",
        "app/forged",
        "app/cli2",
    ] {
        assert_absent(&root, key).await;
    }
    assert!(root.get("app/alice", Default::default()).await.expect("get").found);
    assert_eq!(
        cluster.leader().await.expect("leader"),
        leader,
        "refused TransferLeader moved nothing"
    );
}

/// A TLS handshake refused by the server: a transport error, never a gRPC answer
/// (tonic reports UNKNOWN "transport error" with the TLS alert, or CANCELLED
/// "connection closed" when TLS 1.3 lets the client finish before the server checks
/// its certificate; the client library treats both as connection failures).
fn assert_handshake_refused(s: &tonic::Status) {
    assert!(matches!(s.code(), Code::Unknown | Code::Unavailable | Code::Cancelled), "{s:?}");
    let text = format!("{s:?}");
    assert!(text.contains("transport") || text.contains("connection"), "{s:?}");
}

fn log_contains(cluster: &TestCluster, id: u64, needle: &str, marker: &str) -> bool {
    std::fs::read_to_string(cluster.log_path(id))
        .map(|text| text.lines().any(|l| l.contains(needle) && l.contains(marker)))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_id_reaches_leader_and_follower_logs_and_comes_back() {
    let (dir, tokens) = material();
    let d = dir.path();
    let cluster = secure_cluster(d, &tokens, &[], false).await;
    let leader = cluster.leader().await.expect("leader");
    let addr = cluster.api_addr(leader).expect("addr");
    let mut kv = KvClient::new(channel(addr, d, Some((d, "alice"))));
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let mut req = with_token(put("app/traced"), Some(ALICE_TOKEN));
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01").parse().expect("ascii"),
    );
    req.metadata_mut().insert("x-request-id", "req-traced-1".parse().expect("ascii"));
    let resp = kv.put(req).await.expect("traced put");
    let back =
        resp.metadata().get("traceparent").and_then(|v| v.to_str().ok()).expect("traceparent back");
    assert!(back.starts_with(&format!("00-{trace_id}-")), "{back}");
    assert_eq!(
        resp.metadata().get("x-request-id").and_then(|v| v.to_str().ok()),
        Some("req-traced-1")
    );

    let deadline = Instant::now() + DEADLINE;
    loop {
        let leader_ok = log_contains(&cluster, leader, &trace_id, "leader: write committed");
        let followers_ok = cluster
            .ids()
            .into_iter()
            .filter(|id| *id != leader)
            .all(|id| log_contains(&cluster, id, &trace_id, "follower: received entry"));
        if leader_ok && followers_ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "trace id {trace_id} not in every log (leader {leader_ok}, followers {followers_ok})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await; // poll interval, deadline-bound
    }

    // A malformed traceparent is refused before anything runs.
    let mut bad = with_token(put("app/badtrace"), Some(ALICE_TOKEN));
    bad.metadata_mut().insert("traceparent", "00-xyz-01".parse().expect("ascii"));
    let s = kv.put(bad).await.expect_err("bad traceparent");
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    // A generated trace id comes back when the client sends none.
    let resp = kv.put(with_token(put("app/untraced"), Some(ALICE_TOKEN))).await.expect("put");
    assert!(resp.metadata().get("traceparent").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_client_backs_off_and_completes_and_metrics_move() {
    let (dir, tokens) = material();
    let d = dir.path();
    let cluster = secure_cluster(d, &tokens, &["--rate-per-sec", "20", "--burst", "5"], true).await;
    let leader = cluster.leader().await.expect("leader");
    let metrics_addr = cluster.metrics_addr(leader).expect("metrics addr");
    let before = scrape(metrics_addr).await;

    // A raw RESOURCE_EXHAUSTED carries RetryInfo and retry-after-ms.
    let addr = cluster.api_addr(leader).expect("addr");
    let carol = KvClient::new(channel(addr, d, Some((d, "alice"))));
    // 30 at once against a burst of 5: most are refused at once.
    let calls = (0..30).map(|_| {
        let mut c = carol.clone();
        async move { c.put(with_token(put("carol/x"), Some(CAROL_TOKEN))).await }
    });
    let results = futures::future::join_all(calls).await;
    let s = results
        .into_iter()
        .find_map(Result::err)
        .expect("carol is rate limited among 30 concurrent requests");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    use tonic_types::StatusExt;
    assert!(s.get_details_retry_info().and_then(|r| r.retry_delay).is_some(), "RetryInfo: {s:?}");
    let hint: u64 = s
        .metadata()
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("hint");
    assert!((1..=1_000).contains(&hint), "{hint}");

    // Alice floods; bob writes at the same time and is never limited.
    let alice = client(&cluster, d, "alice", Some(ALICE_TOKEN));
    let bob = client(&cluster, d, "alice", Some(BOB_TOKEN));
    let flood = async {
        // 8 concurrent writers, 60 writes: well over 20/s with a burst of 5.
        let writers = (0..8).map(|w| {
            let alice = alice.clone();
            async move {
                for i in (w..60).step_by(8) {
                    alice
                        .put(format!("app/flood-{i}"), "x")
                        .await
                        .expect("alice completes after backing off");
                }
            }
        });
        futures::future::join_all(writers).await;
    };
    let calm = async {
        for i in 0..5 {
            bob.put(format!("bob/{i}"), "y").await.expect("bob unaffected");
            tokio::time::sleep(Duration::from_millis(300)).await; // bob's pace: 3.3 req/s, well under the limit
        }
    };
    tokio::join!(flood, calm);
    assert!(alice.metrics().rate_limited > 0, "alice was limited: {:?}", alice.metrics());
    assert_eq!(bob.metrics().rate_limited, 0, "bob was not: {:?}", bob.metrics());
    let r = alice.get("app/flood-59", Default::default()).await.expect("get");
    assert!(r.found);

    let after = scrape(metrics_addr).await;

    // Forwarded requests are charged once, on the node the client talks to: bob floods
    // through a follower only; the follower limits him, the leader never does.
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("follower");
    let follower_metrics = cluster.metrics_addr(follower).expect("follower metrics");
    let leader_limited = sample(&after, "meridian_rate_limited_total", &[]);
    let follower_before =
        sample(&scrape(follower_metrics).await, "meridian_rate_limited_total", &[]);
    let mut config =
        ClientConfig::with_endpoints([cluster.api_addr(follower).expect("addr").to_string()]);
    config.tls = bob.config().tls.clone();
    config.token = Some(BOB_TOKEN.to_string());
    let via_follower = Client::connect(config).expect("client");
    let writers = (0..8).map(|w| {
        let c = via_follower.clone();
        async move {
            for i in (w..40).step_by(8) {
                c.put(format!("bob/f-{i}"), "z").await.expect("bob completes via the follower");
            }
        }
    });
    futures::future::join_all(writers).await;
    let follower_after =
        sample(&scrape(follower_metrics).await, "meridian_rate_limited_total", &[]);
    let leader_after = sample(&scrape(metrics_addr).await, "meridian_rate_limited_total", &[]);
    assert!(
        follower_after > follower_before,
        "the follower limits bob: {follower_before} -> {follower_after}"
    );
    assert_eq!(leader_after, leader_limited, "the leader never charges forwarded requests");
    let moved = |name: &str, labels: &[&str]| {
        let (a, b) = (sample(&before, name, labels), sample(&after, name, labels));
        assert!(b > a, "{name}{labels:?} did not move: {a} -> {b}\n{after}");
    };
    moved("meridian_grpc_requests_total", &["method=\"meridian.v1.Kv/Put\"", "code=\"OK\""]);
    moved("meridian_grpc_request_duration_seconds_count", &["method=\"meridian.v1.Kv/Put\""]);
    moved("meridian_rate_limited_total", &[]);
    moved("meridian_raft_commit_index", &[]);
    moved("meridian_raft_applied_index", &[]);
    moved("meridian_log_fsync_duration_seconds_count", &[]);
    moved("meridian_apply_batch_duration_seconds_count", &[]);
    moved("meridian_applied_entries_total", &[]);
    // alice's linearizable get took a shared read barrier on whichever node served it.
    let mut barrier_reads = 0.0;
    for id in cluster.ids() {
        let addr = cluster.metrics_addr(id).expect("metrics addr");
        barrier_reads += sample(&scrape(addr).await, "meridian_read_barrier_readers_total", &[]);
    }
    assert!(barrier_reads >= 1.0, "no read barrier recorded on any node");
    assert!(sample(&after, "meridian_raft_term", &[]) >= 1.0, "{after}");
    assert!(sample(&after, "meridian_raft_is_leader", &[]) == 1.0, "{after}");
    assert!(after.contains("meridian_raft_proposals_in_flight"), "{after}");
    assert!(after.contains("meridian_raft_leader_changes_total"), "{after}");
    assert!(sample(&after, "meridian_grpc_requests_total", &["code=\"RESOURCE_EXHAUSTED\""]) > 0.0);
}

/// TLS on vs off: `meridian bench put` and `get` against a plaintext and a TLS 3-node
/// cluster (auth and limits off), 5 s each, 16 tasks. Ignored by default (it is a
/// measurement, not a check); run it with the release binary:
/// `MERIDIAN_BENCH_BIN=target/release/meridian cargo test --release --test security -- --ignored --nocapture tls_bench`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly with --ignored"]
async fn tls_bench_on_vs_off() {
    let bin = std::env::var("MERIDIAN_BENCH_BIN").unwrap_or_else(|_| MERIDIAN.to_string());
    let (dir, _) = material();
    let d = dir.path();
    for tls in [false, true] {
        let mut options = meridian::cluster::TestOptions::new(&bin);
        if tls {
            options.tls = Some(ManifestTls { dir: d.to_path_buf(), require_client_cert: false });
        }
        let cluster = TestCluster::start(3, options).await.expect("cluster");
        let endpoints: String = cluster
            .ids()
            .into_iter()
            .map(|id| cluster.api_addr(id).expect("addr").to_string())
            .collect::<Vec<_>>()
            .join(",");
        for workload in ["put", "get"] {
            let mut args = vec![
                "bench",
                workload,
                "--endpoints",
                &endpoints,
                "--duration",
                "5s",
                "--warmup",
                "1s",
                "--concurrency",
                "16",
                "--seed",
                "7",
                "--json",
            ];
            let dir_s = d.to_str().expect("utf-8");
            if tls {
                args.extend(["--tls-dir", dir_s]);
            }
            let out = Command::new(&bin).args(&args).output().expect("bench runs");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
            println!(
                "BENCH tls={tls} workload={workload} ops/s={:.0} p50_ms={:.2} p99_ms={:.2} errors={}",
                r["ops_per_sec"].as_f64().unwrap_or(0.0),
                r["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
                r["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
                r["errors"]
            );
            assert_eq!(r["errors"], 0, "{r}");
        }
    }
}
