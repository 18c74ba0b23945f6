//! The Rust client library under process faults on real nodes (DESIGN.md §7): the
//! per-endpoint circuit breaker opens on a dead node and closes after it recovers,
//! calls against a frozen leader end within their deadline, and writes retried across
//! kill -9 / restart cycles are never lost nor applied twice.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::client::*;
use common::*;
use meridian::client::{BreakerConfig, BreakerState, Client, ClientError, PutOptions, ReadOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

/// Breaker sleep window of the breaker test, ms.
const BREAKER_SLEEP_MS: u64 = 500;
/// Requests in the window before the test breaker may open.
const BREAKER_MIN_REQUESTS: u32 = 3;
/// Reads driven at most while waiting for a breaker to change state.
const MAX_DRIVING_READS: usize = 2_000;
/// Reads issued while the breaker is open, to count attempts.
const READS_WHILE_OPEN: u64 = 30;
/// Overall deadline of each test in this file.
const TEST_DEADLINE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_on_a_dead_endpoint_and_closes_after_recovery() {
    let seed = test_seed("breaker_opens_on_a_dead_endpoint_and_closes_after_recovery");
    let cluster = start(3).await;
    within(TEST_DEADLINE, "breaker test", async {
        let mut config = test_config(api_addrs(&cluster, &cluster.ids()), seed);
        config.breaker = BreakerConfig {
            enabled: true,
            min_requests: BREAKER_MIN_REQUESTS,
            error_rate_percent: 50,
            window_ms: 10_000,
            sleep_window_ms: BREAKER_SLEEP_MS,
        };
        let client = Client::connect(config).expect("client");
        let victim = follower(&cluster).await;
        let victim_addr = cluster.api_addr(victim).expect("addr").to_string();
        // Serializable reads go round-robin, so every endpoint gets its share.
        for _ in 0..6 {
            client.get("breaker/k", ReadOptions::serializable()).await.expect("warm-up read");
        }
        assert!(client.endpoints().iter().all(|e| e.breaker == BreakerState::Closed));

        cluster.kill(victim).expect("kill -9 a follower");
        drive_until(&client, &victim_addr, BreakerState::Open).await;
        assert_eq!(client.metrics().breaker_opens, 1, "{:?}", client.metrics());
        let others_closed = client
            .endpoints()
            .iter()
            .filter(|e| e.addr != victim_addr)
            .all(|e| e.breaker == BreakerState::Closed);
        assert!(others_closed, "only the dead endpoint's breaker opens: {:?}", client.endpoints());

        // While open, the dead endpoint is skipped: every read takes one attempt, except
        // at most one probe per elapsed sleep window.
        let before = client.metrics();
        let started = Instant::now();
        for _ in 0..READS_WHILE_OPEN {
            let r = client.get("breaker/k", ReadOptions::serializable()).await.expect("read");
            assert_ne!(served_by(r.header.as_ref()), victim);
        }
        let elapsed = started.elapsed();
        let after = client.metrics();
        let extra_attempts = (after.attempts - before.attempts) - (after.calls - before.calls);
        let probes_allowed = elapsed.as_millis() as u64 / BREAKER_SLEEP_MS + 1;
        eprintln!(
            "{READS_WHILE_OPEN} reads with an open breaker in {} ms: {extra_attempts} extra \
             attempts (at most {probes_allowed} probes allowed)",
            ms(elapsed)
        );
        assert!(
            extra_attempts <= probes_allowed,
            "the client kept sending to the dead endpoint: {extra_attempts} extra attempts"
        );

        cluster.start(victim).await.expect("restart the follower");
        assert_eq!(client.breaker_state(&victim_addr), Some(BreakerState::Open), "no probe yet");
        drive_until(&client, &victim_addr, BreakerState::Closed).await;
        // Closed again: the recovered node serves its share of the reads.
        let served = cluster
            .wait_for("a read served by the recovered node", CLUSTER_DEADLINE, || async {
                let r = client.get("breaker/k", ReadOptions::serializable()).await;
                let r = r.map_err(|e| e.to_string())?;
                let by = served_by(r.header.as_ref());
                if by == victim {
                    Ok(by)
                } else {
                    Err(format!("served by {by}"))
                }
            })
            .await;
        served.expect("traffic returns to the recovered node");
        assert_eq!(client.breaker_state(&victim_addr), Some(BreakerState::Closed));
        eprintln!("breaker test metrics: {:?}", client.metrics());
    })
    .await;
}

/// Issue serializable reads (which must keep succeeding) until `addr`'s breaker is in
/// `state`, for at most [`MAX_DRIVING_READS`] reads and [`CLUSTER_DEADLINE`].
async fn drive_until(client: &Client, addr: &str, state: BreakerState) {
    let started = Instant::now();
    for n in 0..MAX_DRIVING_READS {
        if client.breaker_state(addr) == Some(state) {
            eprintln!(
                "breaker of {addr} is {state:?} after {n} reads, {} ms",
                ms(started.elapsed())
            );
            return;
        }
        if started.elapsed() > CLUSTER_DEADLINE {
            break;
        }
        let read = client.get("breaker/k", ReadOptions::serializable()).await;
        read.unwrap_or_else(|e| panic!("read {n} failed while another node could serve it: {e}"));
        if n % 3 == 2 {
            // An open breaker's sleep window must pass; the loop polls the state with a
            // deadline.
            tokio::time::sleep(meridian::cluster::POLL_INTERVAL).await; // poll interval, deadline-bound
        }
    }
    panic!(
        "breaker of {addr} not {state:?} after {MAX_DRIVING_READS} reads: {:?}",
        client.endpoints()
    );
}

/// Budget of each call in the paused-leader test.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Scheduling slack allowed on top of a call's budget (loaded 2-core machines).
const DEADLINE_SLACK: Duration = Duration::from_millis(750);
/// Calls made at least, and at most, in the paused-leader test.
const MIN_CALLS: usize = 10;
const MAX_CALLS: usize = 60;
/// Consecutive successes that show the client found the new leader.
const RECOVERED_AFTER: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_against_a_paused_leader_finish_within_their_deadline() {
    let seed = test_seed("calls_against_a_paused_leader_finish_within_their_deadline");
    let cluster = start(3).await;
    within(TEST_DEADLINE, "paused leader test", async {
        // Default client settings (10 s attempt deadline): the call budget must cap it.
        // The leader is the first endpoint, so it is where the client sends first.
        let leader = cluster.leader().await.expect("leader");
        let mut order = vec![leader];
        order.extend(cluster.ids().into_iter().filter(|id| *id != leader));
        let mut config =
            meridian::client::ClientConfig::with_endpoints(api_addrs(&cluster, &order));
        config.retry.jitter_seed = Some(seed);
        let client = Client::connect(config).expect("client");
        let warm = client.put("paused/warm-up", "x").await.expect("warm-up write");
        assert_eq!(served_by(warm.header.as_ref()), leader, "the leader served the warm-up");

        cluster.pause(leader).expect("SIGSTOP the leader");
        let mut outcomes: Vec<(String, &str, Duration)> = Vec::new();
        let mut written: BTreeMap<String, Result<pb::Record, ClientError>> = BTreeMap::new();
        let mut streak = 0;
        for i in 0..MAX_CALLS {
            if i >= MIN_CALLS && streak >= RECOVERED_AFTER {
                break;
            }
            let started = Instant::now();
            let (what, result) = if i % 2 == 0 {
                let key = format!("paused/{i:02}");
                let options = PutOptions { timeout: Some(CALL_TIMEOUT), ..PutOptions::default() };
                let r = client.put_with(key.as_str(), "v", options).await;
                let r = r.map(|p| p.record.expect("record of a put"));
                let summary = r.as_ref().map(|_| ()).map_err(|e| (e.code(), e.to_string()));
                written.insert(key.clone(), r);
                (format!("put {key}"), summary)
            } else {
                let options = ReadOptions { timeout: Some(CALL_TIMEOUT), ..ReadOptions::default() };
                let r = client.get("paused/warm-up", options).await;
                (
                    "linearizable get".to_string(),
                    r.map(|_| ()).map_err(|e| (e.code(), e.to_string())),
                )
            };
            let elapsed = started.elapsed();
            assert!(
                elapsed <= CALL_TIMEOUT + DEADLINE_SLACK,
                "call {i} ({what}) took {} ms with a {} ms budget: {result:?}",
                ms(elapsed),
                ms(CALL_TIMEOUT)
            );
            let label = match &result {
                Ok(()) => "ok",
                Err((Code::DeadlineExceeded | Code::Unavailable, _)) => "deadline/unavailable",
                Err((_, e)) => panic!("call {i} ({what}) failed with an unexpected error: {e}"),
            };
            streak = if result.is_ok() { streak + 1 } else { 0 };
            outcomes.push((what, label, elapsed));
        }
        for (what, label, elapsed) in &outcomes {
            eprintln!("  {what}: {label} in {} ms", ms(*elapsed));
        }
        assert!(streak >= RECOVERED_AFTER, "the client never settled on the new leader");
        assert_ne!(client.leader(), Some(cluster.api_addr(leader).expect("addr").to_string()));

        cluster.resume(leader).expect("SIGCONT the old leader");
        cluster.wait_for_leader(CLUSTER_DEADLINE).await.expect("leader");
        let stored = records_under(&client, "paused/", ReadOptions::linearizable()).await;
        for (key, outcome) in &written {
            let got = stored.get(key.as_bytes());
            match outcome {
                Ok(record) => assert_eq!(got, Some(record), "acknowledged {key}"),
                Err(e) if e.is_indeterminate() => {
                    assert!(got.is_none_or(|r| r.version == 1), "{key}: {got:?}")
                }
                Err(e) => assert!(got.is_none(), "{key} failed determinately ({e}) but exists"),
            }
        }
        assert_replicas_identical(&cluster).await;
    })
    .await;
}

/// Writer tasks of the kill/restart and partition tests.
const WRITERS: usize = 4;
/// Writes per writer task (each to its own key).
const WRITES_PER_WRITER: usize = 40;
/// Kill/restart rounds of the kill nemesis.
const KILL_ROUNDS: usize = 3;
/// Isolate/heal rounds of the partition nemesis.
const PARTITION_ROUNDS: usize = 2;
/// Acknowledgements the partition nemesis waits for (at most [`CLUSTER_DEADLINE`])
/// while the old leader is cut off, before healing.
const ACKS_WHILE_PARTITIONED: u64 = 15;
/// Budget of each write of the even writers: enough to ride out an election, so their
/// writes should all be acknowledged.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Budget of each write of the odd writers: shorter than an election, so some of their
/// writes end indeterminate and the resolution by retry gets exercised.
const SHORT_WRITE_TIMEOUT: Duration = Duration::from_millis(600);

/// What happened to each write, by key.
#[derive(Debug, Default)]
struct Ledger {
    acked: BTreeMap<String, pb::Record>,
    /// Acknowledgements that were replays (an earlier attempt had applied the write).
    replayed: usize,
    /// Indeterminate writes: key -> (request id, value).
    indeterminate: BTreeMap<String, (String, String)>,
    /// Writes that failed determinately (never applied).
    failed: BTreeMap<String, String>,
}

/// [`WRITERS`] tasks, each making [`WRITES_PER_WRITER`] unconditional writes to its
/// own keys `inc/<writer>/<i>` with explicit request ids, recording every outcome.
struct Workload {
    ledger: Arc<Mutex<Ledger>>,
    acked: Arc<AtomicU64>,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    fn start(client: &Client, seed: u64) -> Self {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let acked = Arc::new(AtomicU64::new(0));
        let writers = (0..WRITERS)
            .map(|w| {
                let (client, ledger, acked) = (client.clone(), ledger.clone(), acked.clone());
                tokio::spawn(async move {
                    for i in 0..WRITES_PER_WRITER {
                        write_one(&client, seed, w, i, &ledger, &acked).await;
                    }
                })
            })
            .collect();
        Self { ledger, acked, writers }
    }

    /// Poll until at least `target` writes are acknowledged; false if the writers
    /// stall for [`CLUSTER_DEADLINE`] (or finished below the target).
    async fn wait_acked(&self, cluster: &LocalCluster, target: u64) -> bool {
        let progressed = cluster
            .wait_for("the writers to make progress", CLUSTER_DEADLINE, || async {
                let n = self.acked.load(Ordering::SeqCst);
                if n >= target {
                    Ok(())
                } else {
                    Err(format!("{n} of {target} acknowledged"))
                }
            })
            .await;
        if let Err(e) = &progressed {
            eprintln!("nemesis stops: {e}");
        }
        progressed.is_ok()
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Wait for every writer; returns the outcomes.
    async fn finish(self) -> Ledger {
        for w in self.writers {
            w.await.expect("writer task");
        }
        std::mem::take(&mut *self.ledger.lock().expect("ledger"))
    }
}

async fn write_one(
    client: &Client,
    seed: u64,
    w: usize,
    i: usize,
    ledger: &Mutex<Ledger>,
    acked: &AtomicU64,
) {
    let key = format!("inc/{w}/{i:03}");
    let id = format!("inc-{seed:x}-{w}-{i}");
    let timeout = if w % 2 == 0 { WRITE_TIMEOUT } else { SHORT_WRITE_TIMEOUT };
    let options = PutOptions {
        request_id: Some(id.clone()),
        timeout: Some(timeout),
        ..PutOptions::default()
    };
    let value = i.to_string();
    let result = client.put_with(key.as_str(), value.as_str(), options).await;
    let mut ledger = ledger.lock().expect("ledger");
    match result {
        Ok(r) => {
            let record = r.record.expect("record of a put");
            assert_eq!(record.version, 1, "{key}: applied twice? {record:?}");
            ledger.replayed += usize::from(r.duplicate);
            ledger.acked.insert(key, record);
            acked.fetch_add(1, Ordering::SeqCst);
        }
        Err(e) if e.is_indeterminate() => {
            eprintln!("{key}: indeterminate: {e}");
            ledger.indeterminate.insert(key, (id, value));
        }
        Err(e) => {
            eprintln!("{key}: failed: {e}");
            ledger.failed.insert(key, e.to_string());
        }
    }
}

/// Acknowledgements between two nemesis rounds.
fn round_step(rounds: usize) -> u64 {
    (WRITERS * WRITES_PER_WRITER) as u64 / (rounds as u64 + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_survive_kill_and_restart_without_loss_or_duplication() {
    let seed = test_seed("increments_survive_kill_and_restart_without_loss_or_duplication");
    let cluster = start(3).await;
    within(TEST_DEADLINE, "kill/restart test", async {
        let client = cluster_client(&cluster, seed);
        let workload = Workload::start(&client, seed);
        let kills = kill_nemesis(&cluster, seed, &workload).await;
        let ledger = workload.finish().await;
        heal_and_check(&cluster, &client, ledger, &format!("{kills} kills")).await;
    })
    .await;
}

/// Kill -9 a node (the leader on even rounds, a seeded random node otherwise) after
/// every [`round_step`] acknowledged writes, and restart it once a leader is elected
/// without it. Returns how many kills it made.
async fn kill_nemesis(cluster: &LocalCluster, seed: u64, workload: &Workload) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kills = 0;
    for round in 0..KILL_ROUNDS {
        if !workload.wait_acked(cluster, round_step(KILL_ROUNDS) * (round as u64 + 1)).await {
            break;
        }
        let leader = cluster.leader().await.expect("leader");
        let victim = if round % 2 == 0 { leader } else { rng.gen_range(1..=3) };
        eprintln!("nemesis round {round}: kill -9 node {victim} (leader {leader})");
        cluster.kill(victim).expect("kill -9");
        kills += 1;
        cluster.wait_for_leader(CLUSTER_DEADLINE).await.expect("a leader without the victim");
        cluster.start(victim).await.expect("restart the victim");
    }
    kills
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_survive_a_partitioned_leader_without_loss_or_duplication() {
    let seed = test_seed("increments_survive_a_partitioned_leader_without_loss_or_duplication");
    let mut options = options();
    options.proxy = true;
    let cluster = TestCluster::start(3, options).await.expect("cluster");
    within(TEST_DEADLINE, "partition test", async {
        // Clients connect directly: the cut-off leader stays reachable to them, so
        // writes land on it, cannot commit, and are retried on the majority.
        let client = cluster_client(&cluster, seed);
        let workload = Workload::start(&client, seed);
        let rounds = partition_nemesis(&cluster, &workload).await;
        let ledger = workload.finish().await;
        heal_and_check(&cluster, &client, ledger, &format!("{rounds} partitions")).await;
    })
    .await;
}

/// Cut the leader off from the other nodes (both directions) after every
/// [`round_step`] acknowledged writes; heal once the majority elected a leader and
/// the writers made [`ACKS_WHILE_PARTITIONED`] more acknowledgements. Returns rounds made.
async fn partition_nemesis(cluster: &LocalCluster, workload: &Workload) -> usize {
    let net = cluster.network().expect("the cluster runs behind the fault proxy").clone();
    let mut rounds = 0;
    for round in 0..PARTITION_ROUNDS {
        if !workload.wait_acked(cluster, round_step(PARTITION_ROUNDS) * (round as u64 + 1)).await {
            break;
        }
        let old = cluster.leader().await.expect("leader");
        net.isolate(old).expect("isolate the leader");
        rounds += 1;
        let majority: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != old).collect();
        let new = majority_leader(cluster, &majority).await;
        eprintln!("nemesis round {round}: isolated leader {old}; node {new} leads the majority");
        workload.wait_acked(cluster, workload.acked() + ACKS_WHILE_PARTITIONED).await;
        net.heal();
        cluster.wait_for_leader(CLUSTER_DEADLINE).await.expect("one leader after healing");
    }
    rounds
}

/// Poll until every node of `majority` names the same leader among them, which says
/// it leads; returns it.
async fn majority_leader(cluster: &LocalCluster, majority: &[u64]) -> u64 {
    cluster
        .wait_for("a leader elected by the majority", CLUSTER_DEADLINE, || async {
            let mut leaders = Vec::new();
            for id in majority {
                let s = cluster.status(*id).await.map_err(|e| e.to_string())?;
                leaders.push((s.leader_id, s.role() == pb::Role::Leader && s.leader_id == *id));
            }
            let leader = leaders[0].0;
            let agreed = leaders.iter().all(|(l, _)| *l == leader);
            if agreed && majority.contains(&leader) && leaders.iter().any(|(_, is)| *is) {
                Ok(leader)
            } else {
                Err(format!("majority {majority:?} sees {leaders:?}"))
            }
        })
        .await
        .expect("the majority elects a leader")
}

/// After every writer finished: restart anything down, wait for convergence, then
/// check the ledger against the stored records, and resolve every indeterminate write
/// by retrying it with its request id.
async fn heal_and_check(cluster: &LocalCluster, client: &Client, ledger: Ledger, faults: &str) {
    for id in cluster.ids() {
        if !cluster.is_running(id) {
            cluster.start(id).await.expect("restart");
        }
    }
    cluster.wait_for_leader(CLUSTER_DEADLINE).await.expect("leader");
    cluster.wait_converged(CLUSTER_DEADLINE).await.expect("converged");
    let stored = records_under(client, "inc/", ReadOptions::linearizable()).await;
    eprintln!(
        "{} writes, {faults}: {} acknowledged ({} of them replays), {} indeterminate, \
         {} failed, {} stored; client {:?}",
        WRITERS * WRITES_PER_WRITER,
        ledger.acked.len(),
        ledger.replayed,
        ledger.indeterminate.len(),
        ledger.failed.len(),
        stored.len(),
        client.metrics()
    );
    for (key, record) in &stored {
        assert_eq!(record.version, 1, "{}: applied more than once", String::from_utf8_lossy(key));
    }
    for (key, record) in &ledger.acked {
        assert_eq!(stored.get(key.as_bytes()), Some(record), "acknowledged {key} lost or changed");
    }
    for (key, e) in &ledger.failed {
        assert!(
            !stored.contains_key(key.as_bytes()),
            "{key} failed determinately ({e}) but exists"
        );
    }
    let known = ledger.acked.len() + ledger.indeterminate.len() + ledger.failed.len();
    assert_eq!(known, WRITERS * WRITES_PER_WRITER, "every write has an outcome");
    let applied_indeterminate =
        ledger.indeterminate.keys().filter(|k| stored.contains_key(k.as_bytes())).count();
    assert_eq!(
        stored.len(),
        ledger.acked.len() + applied_indeterminate,
        "stored keys are exactly the acknowledged ones plus applied indeterminate ones"
    );
    for (key, (id, value)) in &ledger.indeterminate {
        let options = PutOptions { request_id: Some(id.clone()), ..PutOptions::default() };
        let r = client.put_with(key.as_str(), value.as_str(), options);
        let r = r.await.expect("resolving retry");
        let record = r.record.clone().expect("record");
        assert_eq!(record.version, 1, "{key}: resolving retry applied it twice");
        match stored.get(key.as_bytes()) {
            Some(before) => assert!(r.duplicate && &record == before, "{key}: {r:?}"),
            None => assert!(!r.duplicate, "{key}: absent yet replayed: {r:?}"),
        }
    }
    assert_replicas_identical(cluster).await;
}
