//! GetSession's reads, coalesced. While every batch slot of the replica is
//! busy, the calls that arrive wait together, and the next free slot reads
//! them all with one statement (`sessions::get_many`). A call that finds a
//! slot free is read at once, alone, so coalescing never delays a read at low
//! load; under load it saves the database and the replica a round trip, a
//! statement and a pooled connection per call.
//!
//! A batch is read after each of its calls arrived, so it sees every change
//! committed before the call: a read after a write sees the write, on any
//! replica. The caller's access is checked per call on the row read
//! (`App::get_session`), never per batch.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicU64, Ordering},
};

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::sessions;
use crate::{
    domain::{Error, model::Session},
    metrics::Metrics,
};

/// Most calls one statement reads.
const MOST_PER_BATCH: usize = 256;

type Answer = Result<Option<Session>, Error>;
type Call = (Uuid, oneshot::Sender<Answer>);

/// One replica's coalesced session reads.
#[derive(Debug, Clone)]
pub struct Reads {
    pool: PgPool,
    metrics: Arc<Metrics>,
    /// Batches read at once: one per core the replica may use (a batch is
    /// decoded while the next ones are read), and at most half the pool.
    slots: usize,
    /// Started by the first call, on its runtime.
    calls: Arc<OnceLock<mpsc::UnboundedSender<Call>>>,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    calls: AtomicU64,
    statements: AtomicU64,
}

impl Reads {
    pub fn new(pool: PgPool, metrics: Arc<Metrics>) -> Reads {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let half_the_pool = pool.options().get_max_connections() as usize / 2;
        Reads {
            slots: cores.min(half_the_pool).max(1),
            pool,
            metrics,
            calls: Default::default(),
            counts: Default::default(),
        }
    }

    /// The session `id`, if it exists, read in the next batch.
    pub async fn get(&self, id: Uuid) -> Answer {
        let calls = self.calls.get_or_init(|| {
            let (send, receive) = mpsc::unbounded_channel();
            tokio::spawn(self.clone().coalesce(receive));
            send
        });
        self.counts.calls.fetch_add(1, Ordering::Relaxed);
        let (answer, read) = oneshot::channel();
        if calls.send((id, answer)).is_ok()
            && let Ok(answer) = read.await
        {
            return answer;
        }
        // The coalescer is gone (its runtime is shutting down): read alone.
        sessions::get(&self.pool, id).await
    }

    /// Batches read at once.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Calls so far, and the statements that read them.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counts.calls.load(Ordering::Relaxed),
            self.counts.statements.load(Ordering::Relaxed),
        )
    }

    /// Whenever a slot is free, takes every call waiting and reads them in a
    /// task of their own. Ends when the replica drops its last `Reads`.
    async fn coalesce(self, mut calls: mpsc::UnboundedReceiver<Call>) {
        let slots = Arc::new(Semaphore::new(self.slots));
        let mut batch = Vec::new();
        while let Ok(slot) = slots.clone().acquire_owned().await
            && calls.recv_many(&mut batch, MOST_PER_BATCH).await > 0
        {
            let reads = self.clone();
            let batch = std::mem::take(&mut batch);
            tokio::spawn(async move {
                let found = reads.read(&batch).await;
                drop(slot);
                answer(batch, found);
            });
        }
    }

    /// One statement for the sessions of `batch`.
    async fn read(&self, batch: &[Call]) -> Result<Vec<Session>, Error> {
        self.counts.statements.fetch_add(1, Ordering::Relaxed);
        let mut conn = {
            let _waiting = self.metrics.waiting_for_connection();
            self.pool.acquire().await?
        };
        let ids: Vec<Uuid> = batch.iter().map(|(id, _)| *id).collect();
        sessions::get_many(&mut *conn, &ids).await
    }
}

/// Gives each call its session (or none), or the batch's error. A call whose
/// caller has gone takes nothing.
fn answer(batch: Vec<Call>, found: Result<Vec<Session>, Error>) {
    match found {
        Ok(found) => {
            let found: std::collections::HashMap<Uuid, Session> = found.into_iter().map(|s| (s.id, s)).collect();
            for (id, answer) in batch {
                let _ = answer.send(Ok(found.get(&id).cloned()));
            }
        }
        Err(err) => {
            for (_, answer) in batch {
                let _ = answer.send(Err(shared(&err)));
            }
        }
    }
}

/// The batch's error, for one of its calls: an unreachable database stays
/// UNAVAILABLE (retryable); anything else is INTERNAL, with the batch's error
/// as its cause (logged per call, never shown).
fn shared(err: &Error) -> Error {
    match err {
        Error::Unavailable(message) => Error::Unavailable(message.clone()),
        other => Error::Internal(anyhow::anyhow!("a coalesced read failed: {other:#}")),
    }
}
