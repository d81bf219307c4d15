//! GetSession's reads, coalesced. While the replica reads as many batches as it may at once
//! (one per core), the calls that arrive wait together, and the next batch reads
//! them all with one statement (`sessions::get_many`). A call that finds a
//! batch free to go is read at once, alone, so coalescing never delays a read at low
//! load; under load it saves the database and the replica a round trip, a
//! statement and a pooled connection per call.
//!
//! A batch is read after each of its calls arrived, so it sees every change
//! committed before the call: a read after a write sees the write, on any
//! replica. The caller's access is checked per call on the row read
//! (`App::get_session`), never per batch. Only a table lock (a migration's
//! ALTER, say) makes a read wait, and it makes every read wait, coalesced or
//! not, up to the lock timeout (ABORTED, retryable).

use std::{
    collections::HashMap,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::{sessions, waits::Waits};
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
pub struct Coalescer {
    reader: Reader,
    /// The coalescer's queue, started by the first call on its runtime.
    calls: Arc<OnceLock<mpsc::UnboundedSender<Call>>>,
}

/// What the coalescer reads with (and not its own queue, so that it ends
/// once the replica drops its last `Coalescer`).
#[derive(Debug, Clone)]
struct Reader {
    pool: PgPool,
    metrics: Arc<Metrics>,
    /// Batches read at once: one per core the replica may use (a batch is
    /// decoded while the next ones are read), and at most half the pool.
    batches: usize,
    counts: Arc<Counts>,
    /// How long a read waits for its answer before its connection is
    /// presumed silent and closed.
    silent_after: std::time::Duration,
    /// The replica's database work under way, for health.
    waits: Waits,
}

#[derive(Debug, Default)]
struct Counts {
    calls: AtomicU64,
    statements: AtomicU64,
}

impl Coalescer {
    pub fn new(pool: PgPool, metrics: Arc<Metrics>, silent_after: std::time::Duration, waits: Waits) -> Coalescer {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let half_the_pool = pool.options().get_max_connections() as usize / 2;
        Coalescer {
            reader: Reader {
                batches: cores.min(half_the_pool).max(1),
                pool,
                metrics,
                counts: Default::default(),
                silent_after,
                waits,
            },
            calls: Default::default(),
        }
    }

    /// The session `id`, if it exists, read in the next batch.
    pub async fn get(&self, id: Uuid) -> Answer {
        let calls = self.calls.get_or_init(|| {
            let (send, receive) = mpsc::unbounded_channel();
            tokio::spawn(self.reader.clone().coalesce(receive));
            send
        });
        self.reader.counts.calls.fetch_add(1, Ordering::Relaxed);
        let (answer, read) = oneshot::channel();
        if calls.send((id, answer)).is_ok()
            && let Ok(answer) = read.await
        {
            return answer;
        }
        // The coalescer is gone (its runtime is shutting down): read alone.
        sessions::get(&self.reader.pool, id).await
    }

    /// Batches read at once.
    pub fn batches(&self) -> usize {
        self.reader.batches
    }

    /// Calls so far, and the statements that read them.
    pub fn counts(&self) -> (u64, u64) {
        let counts = &self.reader.counts;
        (
            counts.calls.load(Ordering::Relaxed),
            counts.statements.load(Ordering::Relaxed),
        )
    }
}

impl Reader {
    /// Whenever a batch may go, takes every call waiting and reads them in a
    /// task of their own. Ends when the replica drops its last `Coalescer`.
    async fn coalesce(self, mut calls: mpsc::UnboundedReceiver<Call>) {
        let batches = Arc::new(Semaphore::new(self.batches));
        let mut batch = Vec::new();
        while let Ok(batch_permit) = batches.clone().acquire_owned().await
            && calls.recv_many(&mut batch, MOST_PER_BATCH).await > 0
        {
            let reader = self.clone();
            let batch = std::mem::take(&mut batch);
            tokio::spawn(async move {
                let found = reader.read(&batch).await;
                drop(batch_permit);
                answer(batch, found);
            });
        }
    }

    /// One statement for the sessions of `batch`.
    async fn read(&self, batch: &[Call]) -> Result<sessions::ById, Error> {
        self.counts.statements.fetch_add(1, Ordering::Relaxed);
        let mut conn = {
            let _waiting = self.metrics.waiting_for_connection();
            self.pool.acquire().await?
        };
        let ids: Vec<Uuid> = batch.iter().map(|(id, _)| *id).collect();
        // Bounded: a connection gone silent (no reset, no answer) would
        // hold this batch, and then every batch, for ever.
        let waiting = self.waits.begin();
        let answered = tokio::time::timeout(self.silent_after, sessions::get_many(&mut *conn, &ids)).await;
        drop(waiting);
        match answered {
            Ok(found) => found,
            Err(_) => {
                // Never handed out again: detached from the pool, and its
                // socket closed as it drops.
                drop(conn.detach());
                crate::metrics::database_error("silent_connection");
                self.waits.silence();
                tracing::warn!(
                    after_ms = self.silent_after.as_millis() as u64,
                    "a database connection went silent during a read; closed it"
                );
                Err(Error::Unavailable(
                    "the database did not answer in time; retry with backoff".into(),
                ))
            }
        }
    }
}

/// Gives each call its session (or none), or the error of its row or of the
/// whole statement. A call whose caller has gone takes nothing.
fn answer(batch: Vec<Call>, found: Result<sessions::ById, Error>) {
    match found {
        Ok(found) => {
            let found: HashMap<Uuid, Result<Session, Error>> = found.into_iter().collect();
            for (id, answer) in batch {
                let _ = answer.send(match found.get(&id) {
                    Some(Ok(session)) => Ok(Some(session.clone())),
                    Some(Err(err)) => Err(shared(err)),
                    None => Ok(None),
                });
            }
        }
        Err(err) => {
            for (_, answer) in batch {
                let _ = answer.send(Err(shared(&err)));
            }
        }
    }
}

/// An error, for each call it answers: an unreachable database stays
/// UNAVAILABLE and a lock wait past the lock timeout ABORTED (both
/// retryable); anything else is INTERNAL, with the error as its cause
/// (logged per call, never shown).
fn shared(err: &Error) -> Error {
    match err {
        Error::Unavailable(message) => Error::Unavailable(message.clone()),
        Error::Aborted { reason, message } => Error::Aborted {
            reason: *reason,
            message: message.clone(),
        },
        other => Error::Internal(anyhow::anyhow!("a coalesced read failed: {other:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Reason;

    #[test]
    fn a_shared_error_keeps_what_a_client_may_retry() {
        let unavailable = Error::Unavailable("the database cannot be reached".into());
        assert!(matches!(shared(&unavailable), Error::Unavailable(m) if m == "the database cannot be reached"));
        let aborted = Error::Aborted {
            reason: Reason::LockTimeout,
            message: "locked".into(),
        };
        assert!(matches!(
            shared(&aborted),
            Error::Aborted { reason: Reason::LockTimeout, message } if message == "locked"
        ));
        let internal = Error::Internal(anyhow::anyhow!("stored status 'NEW'").context("session row"));
        assert!(matches!(shared(&internal), Error::Internal(e) if format!("{e:#}").contains("stored status 'NEW'")));
    }
}
