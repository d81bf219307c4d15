//! The one write path: a unit of work.
//!
//! A mutation opens a [`Unit`] (`App::unit`), makes every change of its
//! transaction through it, and commits it. Session rows change only here
//! (the statements that write them are private to the store): each insert or
//! save writes the row, re-arms its deadline and appends its event (with the
//! next gapless seq) in one statement, and the unit keeps the event. After
//! the commit, and only then, the unit counts the status changes (metrics)
//! and hands the committed events on: to this replica's watchers and, through its notifier, to the other replicas
//! (`watch`). Nothing inside the transaction notifies anyone.

use std::sync::Arc;

use sqlx::PgPool;

use super::{
    Tx,
    sessions::{self as store_sessions, EventInput},
};
use crate::domain::{
    Result,
    clocks::{self, Timeouts},
    model::{FeedEvent, Session},
};
use crate::{metrics::Metrics, watch::Hub};

/// One transaction and every session change made in it.
pub struct Unit {
    tx: Tx,
    timeouts: Timeouts,
    hub: Hub,
    /// Counts the status changes once committed.
    metrics: Arc<Metrics>,
    events: Vec<FeedEvent>,
}

impl Unit {
    /// Opens the transaction of a unit of work whose sessions arm their
    /// deadlines with `timeouts` and whose committed events go to `hub`.
    pub async fn begin(pool: &PgPool, timeouts: Timeouts, hub: Hub, metrics: Arc<Metrics>) -> Result<Unit> {
        Ok(Unit {
            tx: super::begin(pool).await?,
            timeouts,
            hub,
            metrics,
            events: Vec::new(),
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

    /// Commits every change, then hands the committed events on to the
    /// watchers (`watch::Hub::committed`).
    pub async fn commit(self) -> Result<()> {
        super::commit(self.tx).await?;
        // Status changes only: a stage change or a config update keeps the status.
        for e in &self.events {
            if let Some(to) = e.event.to_status
                && e.event.from_status != Some(to)
            {
                self.metrics.transition(e.event.from_status, to);
            }
        }
        self.hub.committed(self.events);
        Ok(())
    }
}
