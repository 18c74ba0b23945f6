//! Linearizable read barriers shared by concurrent readers.
//!
//! A linearizable read needs a read index confirmed by a quorum (or, on a follower,
//! obtained from the leader) and then the local state machine to reach it. Done per
//! read, every read paid openraft's linearizer round trip and its own wait on the
//! Raft metrics: ~55 us of leader CPU per read at 64 clients. Here one *round* serves
//! every reader that arrived before it started: readers queue, a single runner task
//! takes the whole queue, obtains one barrier and answers them all, then serves the
//! readers that queued meanwhile (as etcd's linearizable read loop does).
//!
//! Why it is still linearizable: a round starts after each of its readers was
//! invoked, so its read index covers every write acknowledged before any of those
//! reads began.
//!
//! Bounded: at most one round runs at a time; the queue holds at most the reads the
//! API admits concurrently; every waiter leaves at its own deadline.

use std::sync::Mutex;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::Error;

/// Readers waiting for the next round, and whether a runner task is active.
#[derive(Default)]
pub struct ReadBatch {
    state: Mutex<State>,
}

type Waiter = (oneshot::Sender<Result<(), Error>>, Instant);

#[derive(Default)]
struct State {
    waiting: Vec<Waiter>,
    running: bool,
}

impl ReadBatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent under every early exit, so a poisoned lock is fine.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a reader with its deadline; true when the caller must start a runner.
    pub fn enqueue(&self, deadline: Instant) -> (oneshot::Receiver<Result<(), Error>>, bool) {
        let (tx, rx) = oneshot::channel();
        let mut st = self.lock();
        st.waiting.push((tx, deadline));
        let start = !st.running;
        st.running = true;
        (rx, start)
    }

    /// Take the readers of the next round, or stop the runner (returns None) if none.
    pub fn next_round(&self) -> Option<Vec<Waiter>> {
        let mut st = self.lock();
        if st.waiting.is_empty() {
            st.running = false;
            return None;
        }
        Some(std::mem::take(&mut st.waiting))
    }

    /// The runner stopped without finishing (a panic): let the next reader start a new
    /// one; the dropped senders tell queued readers to retry.
    pub fn abandon(&self) {
        let mut st = self.lock();
        st.running = false;
        st.waiting.clear();
    }
}

/// Resets the batch if the runner unwinds.
pub struct RunnerGuard<'a>(pub &'a ReadBatch, pub bool);

impl Drop for RunnerGuard<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.abandon();
        }
    }
}

/// Wait for the answer of the round that serves this reader.
pub async fn wait(
    rx: oneshot::Receiver<Result<(), Error>>,
    deadline: Instant,
) -> Result<(), Error> {
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(res)) => res,
        Ok(Err(_)) => Err(Error::Unavailable("the read barrier was interrupted; retry".into())),
        Err(_) => {
            Err(Error::Timeout("could not confirm the read index before the deadline".into()))
        }
    }
}

/// A copy of a barrier error for each reader of a round.
pub fn share(e: &Error) -> Error {
    match e {
        Error::NotLeader { leader_id, leader_api_addr } => {
            Error::NotLeader { leader_id: *leader_id, leader_api_addr: leader_api_addr.clone() }
        }
        Error::Removed(m) => Error::Removed(m.clone()),
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        Error::Timeout(m) => Error::Timeout(m.clone()),
        other => Error::Unavailable(other.to_string()),
    }
}

/// The latest deadline of a round's readers (the round may serve the most patient).
pub fn round_deadline(batch: &[Waiter]) -> Option<Instant> {
    batch.iter().map(|(_, d)| *d).max()
}

/// Answer every reader of a round.
pub fn answer(batch: Vec<Waiter>, res: &Result<(), Error>) {
    for (tx, _) in batch {
        // A reader that gave up (deadline) dropped its receiver: nothing to do.
        let _ = tx.send(res.as_ref().map(|_| ()).map_err(share));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_queued_during_a_round_share_the_next_one() {
        let b = ReadBatch::default();
        let far = Instant::now() + std::time::Duration::from_secs(5);
        let (rx1, start1) = b.enqueue(far);
        assert!(start1, "the first reader starts the runner");
        let round1 = b.next_round().expect("round 1");
        assert_eq!(round1.len(), 1);
        // Two readers arrive while round 1 runs: no second runner.
        let (rx2, start2) = b.enqueue(far);
        let (rx3, start3) = b.enqueue(far);
        assert!(!start2 && !start3);
        answer(round1, &Ok(()));
        assert!(wait(rx1, far).await.is_ok());
        let round2 = b.next_round().expect("round 2");
        assert_eq!(round2.len(), 2, "both queued readers share one round");
        answer(round2, &Err(Error::NotLeader { leader_id: Some(2), leader_api_addr: None }));
        for rx in [rx2, rx3] {
            assert!(matches!(
                wait(rx, far).await,
                Err(Error::NotLeader { leader_id: Some(2), .. })
            ));
        }
        assert!(b.next_round().is_none(), "the runner stops when nobody waits");
        let (_rx4, start4) = b.enqueue(far);
        assert!(start4, "and the next reader starts a new one");
    }

    #[tokio::test]
    async fn an_abandoned_round_releases_its_readers_and_the_runner_slot() {
        let b = ReadBatch::default();
        let far = Instant::now() + std::time::Duration::from_secs(5);
        let (rx, _) = b.enqueue(far);
        {
            let _guard = RunnerGuard(&b, false); // dropped without finishing
        }
        assert!(matches!(wait(rx, far).await, Err(Error::Unavailable(_))));
        let (_rx, start) = b.enqueue(far);
        assert!(start);
    }
}
