//! Replication on a real 3-node cluster: writes through any node are visible from every
//! node, versions count 1,2,3..., revisions are Raft log indexes, HLCs strictly
//! increase, and every replica stores the same records.

mod common;

use std::collections::BTreeMap;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_through_any_node_is_read_back_linearizably_from_every_node() {
    let cluster = start(3).await;
    let kvs = clients(&cluster);
    for (&writer, kv) in &kvs {
        let key = format!("via-node-{writer}").into_bytes();
        let value = format!("written through node {writer}").into_bytes();
        let written = put_ok(kv, &key, &value).await.record.expect("record");
        for (&reader, rkv) in &kvs {
            let got =
                get(rkv, &key, pb::Consistency::Linearizable).await.expect("linearizable get");
            assert!(got.found, "node {reader} does not see the key written through node {writer}");
            assert_eq!(got.record.as_ref(), Some(&written), "node {reader} returns another record");
            let header = got.header.expect("header");
            assert!(
                header.revision >= written.revision,
                "node {reader}: linearizable read reflects revision {} < write revision {}",
                header.revision,
                written.revision
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_revisions_and_hlcs_increase_with_every_write() {
    const WRITES_PER_KEY: u64 = 8;
    let cluster = start(3).await;
    let kvs: Vec<_> = clients(&cluster).into_values().collect();
    let leader = cluster.leader().await.expect("leader");
    let term_before = cluster.status(leader).await.expect("status").term;

    let mut log: Vec<pb::Record> = Vec::new();
    for round in 1..=WRITES_PER_KEY {
        for (k, key) in [b"alpha".as_slice(), b"beta".as_slice()].into_iter().enumerate() {
            // Rotate the entry node: followers forward, the leader proposes.
            let kv = &kvs[(round as usize + k) % kvs.len()];
            let resp = put_ok(kv, key, format!("round {round}").as_bytes()).await;
            let record = resp.record.expect("record");
            let header = resp.header.expect("header");
            assert_eq!(record.version, round, "version of {key:?} after {round} writes");
            assert_eq!(
                header.revision, record.revision,
                "a put's header reflects the state right after its own write"
            );
            if round == 1 {
                assert_eq!(record.create_revision, record.revision);
            } else {
                let first = log.iter().find(|r| r.key == key).expect("earlier write");
                assert_eq!(record.create_revision, first.revision, "create_revision is stable");
            }
            if let Some(prev) = log.last() {
                assert!(
                    record.revision > prev.revision,
                    "revisions strictly increase: {prev:?} then {record:?}"
                );
                assert!(
                    hlc_of(&record) > hlc_of(prev),
                    "HLCs strictly increase in log order: {prev:?} then {record:?}"
                );
            }
            log.push(record);
        }
    }
    // Per key: versions 1..n in revision order and strictly increasing HLCs.
    let mut per_key: BTreeMap<Vec<u8>, Vec<&pb::Record>> = BTreeMap::new();
    for r in &log {
        per_key.entry(r.key.clone()).or_default().push(r);
    }
    for (key, records) in &per_key {
        let versions: Vec<u64> = records.iter().map(|r| r.version).collect();
        assert_eq!(versions, (1..=WRITES_PER_KEY).collect::<Vec<_>>(), "{key:?}");
        assert!(records.windows(2).all(|w| hlc_of(w[1]) > hlc_of(w[0])), "{key:?}: HLC per key");
    }

    // The revision is the Raft log index: the last write is the last applied entry
    // and, with no leader change in between, consecutive writes are consecutive entries.
    let (_, applied) = assert_replicas_identical(&cluster).await;
    let last = log.last().expect("writes");
    let status = cluster.status(leader).await.expect("status");
    if status.term == term_before && status.leader_id == leader {
        assert_eq!(
            applied, last.revision,
            "no entry after the last write, so it is the last index"
        );
        assert!(
            log.windows(2).all(|w| w[1].revision == w[0].revision + 1),
            "one write is one log entry: {:?}",
            log.iter().map(|r| r.revision).collect::<Vec<_>>()
        );
    } else {
        assert!(applied >= last.revision);
    }
    assert!(status.last_log_index >= last.revision && status.commit_index >= last.revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_stores_identical_records() {
    const KEYS: usize = 40;
    let cluster = start(3).await;
    let kvs: Vec<_> = clients(&cluster).into_values().collect();
    let mut expected: BTreeMap<Vec<u8>, pb::Record> = BTreeMap::new();
    for i in 0..KEYS {
        let kv = &kvs[i % kvs.len()];
        let key = format!("key-{i:03}").into_bytes();
        let rec = put_ok(kv, &key, format!("v1-{i}").as_bytes()).await.record.expect("record");
        expected.insert(key, rec);
    }
    // Overwrite every third key and delete every fifth, through other nodes.
    for i in (0..KEYS).step_by(3) {
        let kv = &kvs[(i + 1) % kvs.len()];
        let key = format!("key-{i:03}").into_bytes();
        let rec = put_ok(kv, &key, format!("v2-{i}").as_bytes()).await.record.expect("record");
        assert_eq!(rec.version, 2);
        expected.insert(key, rec);
    }
    for i in (0..KEYS).step_by(5) {
        let kv = &kvs[(i + 2) % kvs.len()];
        let key = format!("key-{i:03}").into_bytes();
        let resp = delete(kv, &key, None).await.expect("delete");
        assert!(resp.succeeded, "delete of an existing key succeeds: {resp:?}");
        expected.remove(&key);
    }

    let (records, _) = assert_replicas_identical(&cluster).await;
    let got: BTreeMap<Vec<u8>, pb::Record> =
        records.into_iter().map(|r| (r.key.clone(), r)).collect();
    assert_eq!(got.len(), expected.len(), "record count");
    for (key, want) in &expected {
        assert_eq!(
            got.get(key),
            Some(want),
            "replica record of {:?}",
            String::from_utf8_lossy(key)
        );
    }
    // Serializable point reads agree with the range on every node.
    for id in cluster.ids() {
        let kv = cluster.kv(id).expect("kv");
        for key in ["key-001", "key-003", "key-005"] {
            let got = get(&kv, key.as_bytes(), pb::Consistency::Serializable).await.expect("get");
            assert_eq!(got.record.as_ref(), expected.get(key.as_bytes()), "node {id}, {key}");
            assert_eq!(got.found, expected.contains_key(key.as_bytes()));
        }
    }
}

/// A follower that forwards a write names the leader in its answer, and a client that
/// reached a follower first sends its next writes to the leader directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_wrote_through_a_follower_moves_to_the_leader() {
    let cluster = start(3).await;
    let leader = cluster.leader().await.expect("leader");
    let follower = follower(&cluster).await;
    let leader_addr = cluster.api_addr(leader).expect("addr").to_string();
    let follower_addr = cluster.api_addr(follower).expect("addr").to_string();

    let mut raw = cluster.kv(follower).expect("kv");
    let req =
        pb::PutRequest { key: b"fwd/raw".to_vec(), value: b"v".to_vec(), ..Default::default() };
    let answer = raw.put(req).await.expect("forwarded put");
    let hint = answer.metadata().get("x-meridian-leader").and_then(|v| v.to_str().ok());
    assert_eq!(hint, Some(leader_addr.as_str()), "the forwarded answer names the leader");
    let mut direct = cluster.kv(leader).expect("kv");
    let req =
        pb::PutRequest { key: b"fwd/raw".to_vec(), value: b"w".to_vec(), ..Default::default() };
    let answer = direct.put(req).await.expect("put on the leader");
    assert!(answer.metadata().get("x-meridian-leader").is_none(), "the leader answers itself");

    // The follower is the client's first endpoint, so its first write goes there.
    let others = cluster.ids().into_iter().filter(|id| *id != follower);
    let addrs = std::iter::once(follower_addr.clone())
        .chain(others.map(|id| cluster.api_addr(id).expect("addr").to_string()));
    let client =
        meridian::client::Client::connect(meridian::client::ClientConfig::with_endpoints(addrs))
            .expect("client");
    assert!(client.endpoints().iter().all(|e| !e.is_leader), "no leader known yet");
    client.put("fwd/client", "1").await.expect("put through the follower");
    let known: Vec<_> = client.endpoints().into_iter().filter(|e| e.is_leader).collect();
    assert_eq!(known.len(), 1, "{known:?}");
    assert_eq!(known[0].addr, leader_addr, "the client follows the forwarded answer's hint");
}
