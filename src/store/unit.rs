//! The one write path: a unit of work. Session rows change only through a
//! [`Unit`]: each insert or save writes the row, re-arms its deadline and
//! appends its event (the next gapless seq) in one statement. Its commit
//! returns the committed events for `App::commit` to hand on; nothing inside
//! the transaction notifies anyone (docs/ARCHITECTURE.md, "Watching").

use sqlx::PgPool;

use super::{
    Tx,
    sessions::{self as store_sessions, EventInput},
    waits::Waiting,
};
use crate::domain::{
    Result,
    clocks::{self, Timeouts},
    model::{FeedEvent, Session},
};

/// One transaction and every session change made in it.
pub struct Unit {
    tx: Tx,
    timeouts: Timeouts,
    events: Vec<FeedEvent>,
    /// The replica's health sees the unit as database work under way for
    /// as long as it is open (`store::waits`).
    _waiting: Waiting,
}

impl Unit {
    /// Opens the transaction of a unit of work whose sessions arm their
    /// deadlines with `timeouts` and whose committed events go to `hub`.
    pub async fn begin(pool: &PgPool, timeouts: Timeouts, waiting: Waiting) -> Result<Unit> {
        Ok(Unit {
            tx: super::begin(pool).await?,
            timeouts,
            events: Vec::new(),
            _waiting: waiting,
        })
    }

    /// The transaction, for reads, row locks and the writes of other
    /// aggregates (bookings, the directory, request ids).
    pub fn tx(&mut self) -> &mut Tx {
        &mut self.tx
    }

    /// Inserts a new session with its first event (`CREATED`) and arms its deadline.
    pub async fn insert_session(&mut self, s: &Session, event: EventInput<'_>) -> Result<Session> {
        let deadline = clocks::deadline(s, &self.timeouts);
        let due = clocks::check_in_due(s);
        let (created, event) = store_sessions::insert_with_event(&mut self.tx, s, deadline, due, event).await?;
        self.events.push(event);
        Ok(created)
    }

    /// Writes `s`, a changed copy of the locked session `before`, with its
    /// event; re-arms its deadline. The event's statuses and stages are read
    /// off `before` and `s`.
    pub async fn save_session(&mut self, before: &Session, s: &Session, event: EventInput<'_>) -> Result<Session> {
        let deadline = clocks::deadline(s, &self.timeouts);
        let due = clocks::check_in_due(s);
        let (saved, event) = store_sessions::save_with_event(&mut self.tx, before, s, deadline, due, event).await?;
        self.events.push(event);
        Ok(saved)
    }

    /// Commits every change; the events it made, once committed (for
    /// `App::commit` to hand on).
    pub async fn commit(self) -> Result<Vec<FeedEvent>> {
        super::commit(self.tx).await?;
        Ok(self.events)
    }
}
