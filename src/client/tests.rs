//! Client tests against an in-process fake Kv server on 127.0.0.1:0: request-id
//! reuse across retries, leader redirects, deadline and connection-refused
//! classification through real tonic channels, CAS mismatches and range paging.
//! (Tests against real nodes live in tests/.)

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};

use super::*;
use pb::kv_server::{Kv, KvServer};

#[derive(Default)]
struct Fake {
    /// Returned (one per call) before serving normally.
    failures: Mutex<VecDeque<Status>>,
    /// When set, every call answers UNAVAILABLE with this leader hint.
    redirect_to: Mutex<Option<String>>,
    /// When set, calls never answer.
    hang: AtomicBool,
    /// Request ids of every Put received.
    put_ids: Mutex<Vec<String>>,
    records: Mutex<BTreeMap<Vec<u8>, pb::Record>>,
}

impl Fake {
    fn check(&self) -> Result<(), Status> {
        if let Some(leader) = self.redirect_to.lock().expect("lock").clone() {
            let mut s = Status::unavailable("not the leader");
            s.metadata_mut().insert(retry::LEADER_HINT_METADATA, leader.parse().expect("ascii"));
            return Err(s);
        }
        match self.failures.lock().expect("lock").pop_front() {
            Some(status) => Err(status),
            None => Ok(()),
        }
    }
}

struct FakeKv(Arc<Fake>);

#[tonic::async_trait]
impl Kv for FakeKv {
    async fn get(&self, r: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        self.0.check()?;
        let record = self.0.records.lock().expect("lock").get(&r.get_ref().key).cloned();
        Ok(Response::new(pb::GetResponse { header: None, found: record.is_some(), record }))
    }

    async fn put(&self, r: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let req = r.into_inner();
        self.0.put_ids.lock().expect("lock").push(req.request_id.clone());
        if self.0.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.0.check()?;
        let mut records = self.0.records.lock().expect("lock");
        let current = records.get(&req.key).cloned();
        let version = current.as_ref().map_or(0, |r| r.version);
        if req.expected_version.is_some_and(|v| v != version) {
            let resp = pb::PutResponse { succeeded: false, current, ..Default::default() };
            return Ok(Response::new(resp));
        }
        let record = pb::Record {
            key: req.key.clone(),
            value: req.value,
            version: version + 1,
            ..Default::default()
        };
        records.insert(req.key, record.clone());
        Ok(Response::new(pb::PutResponse {
            succeeded: true,
            record: Some(record),
            ..Default::default()
        }))
    }

    async fn delete(
        &self,
        _: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn range(
        &self,
        r: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        self.0.check()?;
        let req = r.into_inner();
        let records = self.0.records.lock().expect("lock");
        let mut page: Vec<pb::Record> = records
            .range(req.page_token.clone()..)
            .filter(|(k, _)| k.starts_with(&req.prefix))
            .take(req.limit as usize + 1)
            .map(|(_, v)| v.clone())
            .collect();
        let next = if page.len() > req.limit as usize {
            page.pop().map(|r| r.key).unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::RangeResponse { header: None, records: page, next_page_token: next }))
    }

    async fn txn(&self, _: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type WatchStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>,
    >;

    async fn watch(
        &self,
        _: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn open_saga(
        &self,
        _: Request<pb::OpenSagaRequest>,
    ) -> Result<Response<pb::OpenSagaResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn commit_saga(
        &self,
        _: Request<pb::CommitSagaRequest>,
    ) -> Result<Response<pb::CommitSagaResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn abort_saga(
        &self,
        _: Request<pb::AbortSagaRequest>,
    ) -> Result<Response<pb::AbortSagaResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_saga(
        &self,
        _: Request<pb::GetSagaRequest>,
    ) -> Result<Response<pb::GetSagaResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

async fn serve(fake: Arc<Fake>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let server = tonic::transport::Server::builder()
        .add_service(KvServer::new(FakeKv(fake)))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    addr
}

fn fast_config(endpoints: &[&str]) -> ClientConfig {
    let mut c = ClientConfig::with_endpoints(endpoints.iter().copied());
    c.retry.initial_backoff_ms = 1;
    c.retry.max_backoff_ms = 5;
    c.retry.jitter_seed = Some(1);
    c
}

#[tokio::test]
async fn put_retries_reuse_one_request_id() {
    let fake = Arc::new(Fake::default());
    fake.failures
        .lock()
        .expect("lock")
        .extend([Status::unavailable("no quorum"), Status::deadline_exceeded("slow")]);
    let addr = serve(fake.clone()).await;
    let client = Client::connect(fast_config(&[&addr])).expect("client");
    let resp = client.put("k", "v").await.expect("put");
    assert!(resp.succeeded);
    let ids = fake.put_ids.lock().expect("lock").clone();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(ids[0].len(), request_id::GENERATED_REQUEST_ID_CHARS);
    // A second logical write gets a fresh id.
    client.put("k", "w").await.expect("put");
    assert_ne!(fake.put_ids.lock().expect("lock")[3], ids[0]);
}

#[tokio::test]
async fn caller_supplied_request_id_is_sent_and_validated() {
    let fake = Arc::new(Fake::default());
    let addr = serve(fake.clone()).await;
    let client = Client::connect(fast_config(&[&addr])).expect("client");
    let options = PutOptions { request_id: Some("order-7".into()), ..PutOptions::default() };
    client.put_with("k", "v", options).await.expect("put");
    assert_eq!(fake.put_ids.lock().expect("lock").as_slice(), ["order-7"]);
    let bad = PutOptions { request_id: Some("has space".into()), ..PutOptions::default() };
    let err = client.put_with("k", "v", bad).await.expect_err("invalid id");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn unavailable_with_leader_hint_redirects_to_the_leader() {
    let follower = Arc::new(Fake::default());
    let leader = Arc::new(Fake::default());
    let leader_addr = serve(leader.clone()).await;
    *follower.redirect_to.lock().expect("lock") = Some(leader_addr.clone());
    let follower_addr = serve(follower.clone()).await;
    let client = Client::connect(fast_config(&[&follower_addr])).expect("client");
    assert!(client.put("k", "v").await.expect("put").succeeded);
    assert_eq!(leader.put_ids.lock().expect("lock").len(), 1);
    assert_eq!(client.leader(), Some(leader_addr));
    assert_eq!(client.metrics().redirects, 1);
    assert_eq!(client.endpoints().len(), 2);
}

#[tokio::test]
async fn client_deadline_is_deadline_exceeded_and_leaves_a_write_indeterminate() {
    let fake = Arc::new(Fake::default());
    fake.hang.store(true, Ordering::SeqCst);
    let addr = serve(fake.clone()).await;
    let mut config = fast_config(&[&addr]);
    config.request_timeout_ms = 50;
    config.retry.max_attempts = 2;
    let client = Client::connect(config).expect("client");
    let err = client.put("k", "v").await.expect_err("times out");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(err.is_indeterminate());
    assert!(err.is_retryable());
    let ids = fake.put_ids.lock().expect("lock").clone();
    assert_eq!(err.request_id(), ids.first().map(String::as_str));
}

#[tokio::test]
async fn refused_connection_is_unavailable_and_not_indeterminate() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut config = fast_config(&[&format!("127.0.0.1:{port}")]);
    config.retry.max_attempts = 2;
    let client = Client::connect(config).expect("client");
    let err = client.put("k", "v").await.expect_err("refused");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(!err.is_indeterminate(), "never sent: {err}");
}

#[tokio::test]
async fn cas_mismatch_is_a_response_with_the_current_record() {
    let addr = serve(Arc::new(Fake::default())).await;
    let client = Client::connect(fast_config(&[&addr])).expect("client");
    assert!(client.cas("k", 0, "first").await.expect("create").succeeded);
    let resp = client.cas("k", 5, "x").await.expect("no error");
    assert!(!resp.succeeded);
    assert_eq!(resp.current.map(|r| r.version), Some(1));
    let got = client.get("k", ReadOptions::serializable()).await.expect("get");
    assert_eq!(got.record.map(|r| r.value), Some(b"first".to_vec()));
    assert!(!client.get("nope", ReadOptions::default()).await.expect("get").found);
}

#[tokio::test]
async fn range_all_pages_until_the_end_or_the_maximum() {
    let addr = serve(Arc::new(Fake::default())).await;
    let client = Client::connect(fast_config(&[&addr])).expect("client");
    for i in 0..25 {
        client.put(format!("p/{i:02}"), "v").await.expect("put");
    }
    client.put("q/other", "v").await.expect("put");
    let options = RangeOptions { limit: 10, ..RangeOptions::prefix("p/") };
    let some = client.range_all(options.clone(), 22).await.expect("range");
    assert_eq!((some.records.len(), some.more, some.pages), (22, true, 3));
    let all = client.range_all(options, 1_000).await.expect("range");
    assert_eq!((all.records.len(), all.more, all.pages), (25, false, 3));
    assert_eq!(all.records[24].key, b"p/24".to_vec());
}

#[tokio::test]
async fn invalid_read_options_are_rejected_before_sending() {
    let client = Client::connect(fast_config(&["127.0.0.1:1"])).expect("client");
    let bounded_without_staleness =
        ReadOptions { consistency: Consistency::BoundedStaleness, ..ReadOptions::default() };
    let staleness_on_linearizable =
        ReadOptions { max_staleness: Some(Duration::from_secs(1)), ..ReadOptions::default() };
    for options in [bounded_without_staleness, staleness_on_linearizable] {
        let err = client.get("k", options).await.expect_err("invalid");
        assert!(matches!(err, ClientError::InvalidRequest(_)), "{err}");
    }
    let both = RangeOptions { start: b"a".to_vec(), ..RangeOptions::prefix("p") };
    assert!(matches!(client.range(both).await, Err(ClientError::InvalidRequest(_))));
    assert_eq!(client.metrics().attempts, 0);
}
