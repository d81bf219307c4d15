//! WatchSession and WatchSessions (SPEC §4.5): each stream follows this
//! replica's deliveries (`watch::Hub`) with no task and no connection of its
//! own, and reads the database only to catch up: from a client's `after_seq`
//! or cursor, after falling behind the channel (a slow client), or over a
//! gap. A stream the client does not read is not polled, so it holds up
//! nobody; it lags the channel and catches up when read again.

use std::{collections::VecDeque, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures_util::Stream;
use sqlx::PgPool;
use tokio::sync::broadcast::{self, error::RecvError};
use uuid::Uuid;

use super::App;
use super::quotas::Permit;
use crate::domain::{
    Error, Result,
    access::{Principal, Visibility},
    model::FeedPosition,
    model::{EventType, FeedEvent, Session, SessionEvent},
    query::{FeedWatch, ParticipantFilter, SessionWatch},
};
use crate::store::{Span, feed as store_feed, sessions as store_sessions, waits::Waits};
use crate::watch::{Committed, Hub, Page};

/// Rows read per query while catching up.
const PAGE: i64 = 200;
/// Wait before retrying a catch-up read that failed.
const RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// An item of a WatchSession stream.
#[derive(Debug, Clone)]
pub enum SessionItem {
    Snapshot(Box<Session>),
    Event(SessionEvent),
}

/// An item of a WatchSessions stream: an event and its position in the feed.
#[derive(Debug, Clone)]
pub struct FeedItem {
    pub event: SessionEvent,
    pub position: FeedPosition,
}

fn ends_session(e: &SessionEvent) -> bool {
    e.event_type == EventType::StatusChanged && e.to_status.is_some_and(|s| s.is_terminal())
}

/// Encodes a feed position as an opaque cursor.
pub fn encode_cursor(p: FeedPosition) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{}:{}", p.0, p.1))
}

/// Decodes a cursor from a previous WatchSessions response.
pub fn decode_cursor(raw: &str) -> Result<FeedPosition> {
    let invalid = || Error::invalid("cursor", "is not a cursor issued by WatchSessions");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("v1"), Some(txid), Some(id), None) => {
            Ok((txid.parse().map_err(|_| invalid())?, id.parse().map_err(|_| invalid())?))
        }
        _ => Err(invalid()),
    }
}

/// What a stream got from the hub.
enum Next<T> {
    /// Events.
    Events(T),
    /// It fell behind the channel: read the database.
    CatchUp,
    /// The server is closing.
    End,
}

impl<T> From<Result<T, RecvError>> for Next<T> {
    fn from(received: Result<T, RecvError>) -> Self {
        match received {
            Ok(events) => Next::Events(events),
            Err(RecvError::Lagged(_)) => Next::CatchUp,
            Err(RecvError::Closed) => Next::End,
        }
    }
}

/// Waits before retrying a read that failed; false when the server is closing.
async fn pause(hub: &Hub) -> bool {
    tokio::select! {
        _ = hub.closing().cancelled() => false,
        _ = tokio::time::sleep(RETRY) => true,
    }
}

/// Runs a stream's catch-up `read` in a task of its own, bounded by the
/// silence bound (`store::bounded`): it waits neither on the client (a
/// stream whose client does not read is not polled, which must not hold a
/// read open, or count as database work stuck) nor is it dropped half-way
/// when the client goes away.
async fn catch_up<T: Send + 'static>(
    waits: &Waits,
    silent_after: Duration,
    read: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let waits = waits.clone();
    tokio::spawn(async move { crate::store::bounded(&waits, Span::Short, silent_after, read).await })
        .await
        .map_err(|e| Error::Internal(anyhow::Error::new(e).context("a stream's catch-up read")))?
}

/// A WatchSession stream: the events of one session, in seq order, each once.
struct SessionFollower {
    /// This stream's place among the replica's watch streams.
    _permit: Permit,
    pool: PgPool,
    /// This replica's database work under way (health's view), and how long
    /// a read may wait for an answer.
    waits: Waits,
    silent_after: Duration,
    hub: Hub,
    /// This replica's commits, ahead of the feed.
    committed: broadcast::Receiver<Committed>,
    /// The feed: commits of every replica.
    pages: broadcast::Receiver<Page>,
    id: Uuid,
    /// The last seq handed to `ready`.
    seq: i64,
    ready: VecDeque<SessionItem>,
    /// Events after `seq` may exist that only the database has.
    behind: bool,
    /// The stream ends once this seq is out (the session's terminal event).
    last: Option<i64>,
}

impl SessionFollower {
    async fn next(&mut self) -> Option<Result<SessionItem>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(Ok(item));
            }
            if self.last.is_some_and(|last| self.seq >= last) {
                return None;
            }
            if self.behind {
                self.hub.catching_up();
                let (pool, id, seq) = (self.pool.clone(), self.id, self.seq);
                let read = async move {
                    let events = store_sessions::events(&pool, id, seq, PAGE).await?;
                    if !events.is_empty() {
                        // Shown only once safe from a failover, as the feed is.
                        store_feed::replicated(&pool).await?;
                    }
                    Ok(events)
                };
                match catch_up(&self.waits, self.silent_after, read).await {
                    Ok(events) => {
                        self.behind = events.len() as i64 == PAGE;
                        for e in events {
                            self.take(e);
                        }
                        // Read to the end and still short of the terminal event
                        // the snapshot showed: the history was purged meanwhile.
                        if !self.behind && self.last.is_some_and(|last| self.seq < last) {
                            return None;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, session_id = %self.id, "watch catch-up failed; retrying");
                        if !pause(&self.hub).await {
                            return None;
                        }
                    }
                }
                continue;
            }
            // Idle streams wait here, at no cost.
            let next: Next<std::sync::Arc<[FeedEvent]>> = tokio::select! {
                _ = self.hub.closing().cancelled() => Next::End,
                received = self.committed.recv() => received.into(),
                received = self.pages.recv() => Next::from(received.map(|page| page.events)),
            };
            match next {
                Next::Events(events) => {
                    let id = self.id;
                    for e in events.iter().filter(|e| e.event.session_id == id) {
                        match e.event.seq - self.seq {
                            ..=0 => {}
                            1 => self.take(e.event.clone()),
                            // A gap: an earlier event is not in the feed yet (an
                            // older transaction) or was missed; the table has it.
                            _ => {
                                self.behind = true;
                                break;
                            }
                        }
                    }
                }
                Next::CatchUp => self.behind = true,
                Next::End => return None,
            }
        }
    }

    fn take(&mut self, e: SessionEvent) {
        self.seq = e.seq;
        if ends_session(&e) {
            self.last = Some(e.seq);
        }
        self.ready.push_back(SessionItem::Event(e));
    }
}

/// A WatchSessions stream: the feed from a position, filtered.
struct FeedFollower {
    _permit: Permit,
    pool: PgPool,
    /// This replica's database work under way (health's view), and how long
    /// a read may wait for an answer.
    waits: Waits,
    silent_after: Duration,
    hub: Hub,
    pages: broadcast::Receiver<Page>,
    filter: ParticipantFilter,
    visibility: Visibility,
    /// Every event up to here was looked at.
    position: FeedPosition,
    ready: VecDeque<FeedItem>,
    behind: bool,
}

impl FeedFollower {
    async fn next(&mut self) -> Option<Result<FeedItem>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(Ok(item));
            }
            if self.behind {
                self.hub.catching_up();
                let (pool, position) = (self.pool.clone(), self.position);
                let read = async move {
                    let page = store_feed::feed_page(&pool, position, PAGE).await?;
                    if !page.events.is_empty() {
                        store_feed::replicated(&pool).await?;
                    }
                    Ok(page)
                };
                match catch_up(&self.waits, self.silent_after, read).await {
                    Ok(page) => {
                        self.behind = page.events.len() as i64 == PAGE;
                        self.take(&page.events);
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "feed catch-up failed; retrying");
                        if !pause(&self.hub).await {
                            return None;
                        }
                    }
                }
                continue;
            }
            // Idle streams wait here, at no cost.
            let next: Next<Page> = tokio::select! {
                _ = self.hub.closing().cancelled() => Next::End,
                received = self.pages.recv() => received.into(),
            };
            match next {
                // Events past the start of this page may have gone by unseen.
                Next::Events(page) if page.after > self.position => self.behind = true,
                Next::Events(page) => self.take(&page.events),
                Next::CatchUp => self.behind = true,
                Next::End => return None,
            }
        }
    }

    fn take(&mut self, events: &[FeedEvent]) {
        for e in events {
            if e.position <= self.position {
                continue;
            }
            self.position = e.position;
            if self.filter.admits(self.visibility, e) {
                self.ready.push_back(FeedItem {
                    event: e.event.clone(),
                    position: e.position,
                });
            }
        }
    }
}

impl App {
    /// Opens a WatchSession stream: the snapshot (unless `after_seq`), then
    /// every event in seq order; it ends after the terminal event.
    pub async fn watch_session(
        &self,
        who: &Principal,
        watch: SessionWatch,
    ) -> Result<impl Stream<Item = Result<SessionItem>> + Send + 'static> {
        let SessionWatch {
            session_id: id,
            after_seq,
        } = watch;
        // Subscribe before reading, so nothing committed after the read goes unnoticed.
        let (committed, pages) = (self.hub.subscribe_committed(), self.hub.subscribe_feed());
        let snapshot = self.get_session(who, id).await?;
        // Shown (and its last_seq the stream goes on from) only once safe
        // from a failover, as the feed is.
        store_feed::replicated(&self.pool).await?;
        if let Some(after) = after_seq
            && after > snapshot.last_seq
        {
            return Err(Error::invalid(
                "after_seq",
                format!("is beyond the session's last event ({})", snapshot.last_seq),
            ));
        }
        let last_seq = snapshot.last_seq;
        // After the checks of existence and access (SPEC §6 order).
        let slot = self.watches.acquire(&who.user_id.to_string())?;
        let follower = SessionFollower {
            _permit: slot,
            pool: self.pool.clone(),
            waits: self.waits.clone(),
            silent_after: self.rules.silent_connection,
            hub: self.hub.clone(),
            committed,
            pages,
            id,
            seq: after_seq.unwrap_or(last_seq),
            behind: after_seq.is_some_and(|after| after < last_seq),
            // A session already over has nothing after its last event.
            last: snapshot.status.is_terminal().then_some(last_seq),
            ready: match after_seq {
                Some(_) => VecDeque::new(),
                None => VecDeque::from([SessionItem::Snapshot(Box::new(snapshot))]),
            },
        };
        Ok(futures_util::stream::unfold(follower, |mut f| async move {
            let item = f.next().await?;
            Some((item, f))
        }))
    }

    /// Opens a WatchSessions feed of the events the caller may see, from
    /// `cursor` (exclusive) or from now; returns the position it starts
    /// from too.
    pub async fn watch_sessions(
        &self,
        who: &Principal,
        watch: FeedWatch,
    ) -> Result<(FeedPosition, impl Stream<Item = Result<FeedItem>> + Send + 'static)> {
        let FeedWatch { filter, cursor, .. } = watch;
        let pages = self.hub.subscribe_feed();
        // From now: the horizon (events of transactions still open may follow).
        let horizon = store_feed::feed_horizon(&self.pool).await?;
        if let Some((txid, _)) = cursor
            && txid > horizon.0
        {
            // No cursor this feed issued lies beyond its horizon: forged,
            // from another cluster, or from a primary whose last
            // transactions a failover lost. Following it would skip
            // everything.
            return Err(Error::invalid(
                "cursor",
                "is ahead of the feed (another cluster's, or from before a failover that lost it): \
                 read the current state again and watch from now",
            ));
        }
        if cursor.is_none() {
            // The start position is a transaction id the stream will go on
            // from. Transactions that need not wait for the standby (the
            // webhook pipeline's) use ids too, so the barrier's commit,
            // with an id past the horizon, is what makes the standby's next
            // id pass it: a new primary then never gives an event an id
            // below this position.
            store_feed::replicated(&self.pool).await?;
        }
        let position = cursor.unwrap_or(horizon);
        // After the checks of the request (as WatchSession does).
        let slot = self.watches.acquire(&who.user_id.to_string())?;
        let follower = FeedFollower {
            _permit: slot,
            pool: self.pool.clone(),
            waits: self.waits.clone(),
            silent_after: self.rules.silent_connection,
            hub: self.hub.clone(),
            pages,
            filter,
            visibility: who.visibility(),
            position,
            behind: cursor.is_some(),
            ready: VecDeque::new(),
        };
        let items = futures_util::stream::unfold(follower, |mut f| async move {
            let item = f.next().await?;
            Some((item, f))
        });
        Ok((position, items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor((42, 7))).unwrap(), (42, 7));
        assert!(decode_cursor("nope").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("v2:1:2")).is_err());
    }
}
