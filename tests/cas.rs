//! Compare-and-swap on a real 3-node cluster: a stale expected_version is a result
//! (succeeded=false plus the current record), create-only refuses an existing key, and
//! concurrent CAS increments never lose an update.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_cas_returns_current_record_and_writes_nothing() {
    let cluster = start(3).await;
    let kvs: Vec<_> = clients(&cluster).into_values().collect();
    put_ok(&kvs[0], b"reg", b"one").await;
    let v2 = put_ok(&kvs[1], b"reg", b"two").await.record.expect("record");
    assert_eq!(v2.version, 2);

    for kv in &kvs {
        let stale = put(kv, b"reg", b"stale", Some(1)).await.expect("stale cas is not an error");
        assert!(!stale.succeeded, "CAS with expected_version 1 on version 2 must fail: {stale:?}");
        assert_eq!(stale.current.as_ref(), Some(&v2), "the failed CAS returns the current record");
        assert!(stale.record.is_none(), "nothing was written: {stale:?}");
    }
    let now = get(&kvs[2], b"reg", pb::Consistency::Linearizable).await.expect("get");
    assert_eq!(now.record.as_ref(), Some(&v2), "failed CAS left the record unchanged");

    let ok = put(&kvs[2], b"reg", b"three", Some(2)).await.expect("cas");
    assert!(ok.succeeded, "CAS with the current version succeeds: {ok:?}");
    let v3 = ok.record.expect("record");
    assert_eq!((v3.version, v3.value.as_slice()), (3, b"three".as_slice()));
    assert!(v3.revision > v2.revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_only_put_fails_on_an_existing_key() {
    let cluster = start(3).await;
    let kvs: Vec<_> = clients(&cluster).into_values().collect();
    let created = put(&kvs[0], b"once", b"first", Some(0)).await.expect("create");
    assert!(created.succeeded, "create-only on an absent key succeeds: {created:?}");
    let first = created.record.expect("record");
    assert_eq!(first.version, 1);

    for kv in &kvs {
        let again =
            put(kv, b"once", b"second", Some(0)).await.expect("create-only is not an error");
        assert!(!again.succeeded, "create-only on an existing key must fail: {again:?}");
        assert_eq!(again.current.as_ref(), Some(&first), "it returns the existing record");
    }
    let now = get(&kvs[1], b"once", pb::Consistency::Linearizable).await.expect("get");
    assert_eq!(now.record.as_ref(), Some(&first));

    // A CAS on an absent key fails with no current record.
    let absent = put(&kvs[2], b"never-written", b"x", Some(3)).await.expect("cas on absent key");
    assert!(!absent.succeeded && absent.current.is_none(), "{absent:?}");
    let none = get(&kvs[0], b"never-written", pb::Consistency::Linearizable).await.expect("get");
    assert!(!none.found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cas_increments_are_never_lost() {
    const CLIENTS: usize = 8;
    const INCREMENTS_PER_CLIENT: u64 = 25;
    const MAX_ATTEMPTS_PER_CLIENT: u64 = 2_000;
    const TEST_DEADLINE: Duration = Duration::from_secs(90);

    let cluster = start(3).await;
    let kvs: Vec<_> = clients(&cluster).into_values().collect();
    let created = put(&kvs[0], b"counter", b"0", Some(0)).await.expect("create counter");
    assert!(created.succeeded);
    let deadline = Instant::now() + TEST_DEADLINE;
    let kvs = Arc::new(kvs);

    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let kvs = Arc::clone(&kvs);
        tasks.push(tokio::spawn(async move {
            let kv = &kvs[c % kvs.len()];
            let mut successes = 0u64;
            let mut attempts = 0u64;
            let mut current = get(kv, b"counter", pb::Consistency::Linearizable)
                .await
                .expect("read counter")
                .record
                .expect("counter exists");
            while successes < INCREMENTS_PER_CLIENT {
                attempts += 1;
                assert!(attempts <= MAX_ATTEMPTS_PER_CLIENT, "client {c}: too many CAS attempts");
                assert!(
                    Instant::now() < deadline,
                    "client {c}: deadline passed after {successes} increments"
                );
                let n: u64 =
                    String::from_utf8_lossy(&current.value).parse().expect("counter is a number");
                let next = (n + 1).to_string();
                let resp = put(kv, b"counter", next.as_bytes(), Some(current.version))
                    .await
                    .unwrap_or_else(|s| panic!("client {c}: CAS failed with an error: {s:?}"));
                if resp.succeeded {
                    successes += 1;
                    current = resp.record.expect("record of a successful CAS");
                    assert_eq!(current.value, next.as_bytes());
                } else {
                    current = resp.current.expect("a failed CAS on an existing key returns it");
                }
            }
            (successes, attempts)
        }));
    }
    let mut total_successes = 0;
    let mut total_attempts = 0;
    for t in tasks {
        let (s, a) = t.await.expect("client task");
        total_successes += s;
        total_attempts += a;
    }
    assert_eq!(total_successes, CLIENTS as u64 * INCREMENTS_PER_CLIENT);
    let fin = get(&kvs[1], b"counter", pb::Consistency::Linearizable).await.expect("get");
    let rec = fin.record.expect("counter");
    let value: u64 = String::from_utf8_lossy(&rec.value).parse().expect("number");
    assert_eq!(
        value, total_successes,
        "every successful CAS increments exactly once ({total_attempts} attempts)"
    );
    assert_eq!(rec.version, total_successes + 1, "one version per successful CAS plus the create");
    assert_replicas_identical(&cluster).await;
}
