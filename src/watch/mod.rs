//! Live delivery of session events to watchers, on one replica or many: the
//! [`Hub`] that `App::commit` hands each unit of work's committed events to
//! ([`Hub::committed`]), the one feed reader per replica ([`feed::run`]),
//! and the notifier and listener between replicas ([`relay`]).
//!
//! What it keeps true: no write transaction notifies anyone, nothing is
//! published before it committed (and reached the synchronous standby), and
//! a stream that falls behind catches up from the database on its own,
//! losing and repeating nothing. How: docs/ARCHITECTURE.md, "Watching".

pub(crate) mod feed;
pub(crate) mod relay;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::model::{FeedEvent, FeedPosition};

/// How often the feed reader reads without news (the default).
pub const BACKSTOP: Duration = Duration::from_secs(1);

/// Deliveries buffered per replica before a slow stream lags (and catches up
/// from the database): the default.
pub const BUFFER: usize = 1024;

/// Commits this replica's reader tracks at most (for its lag and retries);
/// past it, the newest position stands for the rest.
const KNOWN_CAP: usize = 4096;

/// Events this replica has just committed, straight from the unit of work
/// and ahead of the feed: WatchSession streams take them.
pub type Committed = Arc<[FeedEvent]>;

/// The next events of the feed, in feed order: every event after `after` up
/// to the last one's position.
#[derive(Debug, Clone)]
pub struct Page {
    pub after: FeedPosition,
    pub events: Arc<[FeedEvent]>,
}

/// A replica's fan-out of committed events, shared by the unit of work, the
/// feed reader, the notifier, the listener and every stream.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    committed: broadcast::Sender<Committed>,
    pages: broadcast::Sender<Page>,
    closing: CancellationToken,
    backstop: Duration,
    /// Tells this replica's NOTIFYs from the others'.
    replica: Uuid,
    /// Wakes the feed reader.
    wake: Notify,
    feed: Mutex<FeedState>,
    /// The newest position committed here and not yet announced, and since
    /// when the oldest unannounced commit has waited.
    outbox: Mutex<Option<(FeedPosition, Instant)>>,
    /// Wakes the notifier.
    announce: Notify,
    reads: AtomicU64,
    catch_ups: AtomicU64,
}

#[derive(Debug, Default)]
struct FeedState {
    /// Every event up to here has been published.
    position: FeedPosition,
    /// Commits this replica knows of (its own, and the newest of each other
    /// replica's announcements) that the reader has not passed yet, with the
    /// moment each became known: the feed's lag.
    known: BTreeMap<FeedPosition, Instant>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(BACKSTOP, BUFFER)
    }
}

impl Hub {
    /// A hub whose reader reads at least every `backstop`, buffering `buffer`
    /// deliveries for slow streams.
    pub fn new(backstop: Duration, buffer: usize) -> Self {
        Hub {
            inner: Arc::new(Inner {
                committed: broadcast::channel(buffer.max(1)).0,
                pages: broadcast::channel(buffer.max(1)).0,
                closing: CancellationToken::new(),
                backstop,
                replica: Uuid::new_v4(),
                wake: Notify::new(),
                feed: Mutex::default(),
                outbox: Mutex::default(),
                announce: Notify::new(),
                reads: AtomicU64::new(0),
                catch_ups: AtomicU64::new(0),
            }),
        }
    }

    /// A receiver of every event this replica commits from now on.
    pub fn subscribe_committed(&self) -> broadcast::Receiver<Committed> {
        self.inner.committed.subscribe()
    }

    /// A receiver of every page of the feed from now on.
    pub fn subscribe_feed(&self) -> broadcast::Receiver<Page> {
        self.inner.pages.subscribe()
    }

    /// Whether any stream on this replica follows the feed.
    fn watched(&self) -> bool {
        self.inner.pages.receiver_count() > 0
    }

    /// Events the unit of work has just committed on this replica.
    pub fn committed(&self, events: Vec<FeedEvent>) {
        let Some(newest) = events.iter().map(|e| e.position).max() else {
            return;
        };
        // No receivers is fine: nobody is watching.
        let _ = self.inner.committed.send(events.into());
        self.known(newest);
        let mut outbox = self.outbox();
        *outbox = Some(match *outbox {
            Some((position, since)) => (position.max(newest), since),
            None => (newest, Instant::now()),
        });
        drop(outbox);
        self.inner.announce.notify_one();
    }

    /// Another replica committed up to `position`.
    pub fn announced(&self, position: FeedPosition) {
        self.known(position);
    }

    /// Something may have been missed (the listener reconnected): read now.
    pub fn resync(&self) {
        self.inner.wake.notify_one();
    }

    fn known(&self, position: FeedPosition) {
        let mut feed = self.feed();
        if position > feed.position {
            let mut since = Instant::now();
            if feed.known.len() >= KNOWN_CAP
                && let Some((newest, at)) = feed.known.pop_last()
            {
                // Full: the newest position stands for the newest commits,
                // with the oldest moment among them.
                since = since.min(at);
                if newest > position {
                    feed.known.insert(newest, since);
                    return self.inner.wake.notify_one();
                }
            }
            feed.known.entry(position).or_insert(since);
        }
        drop(feed);
        self.inner.wake.notify_one();
    }

    /// Where the feed reader is: every event up to here has been published.
    pub fn position(&self) -> FeedPosition {
        self.feed().position
    }

    /// How long the oldest commit this replica knows of has waited for the
    /// feed reader: zero when the feed is caught up. It grows while a
    /// transaction anywhere in the cluster holds the horizon back.
    pub fn feed_lag(&self) -> Duration {
        self.feed()
            .known
            .values()
            .min()
            .map_or(Duration::ZERO, |since| since.elapsed())
    }

    /// How long the oldest commit of this replica not yet announced to the
    /// others has waited for the notifier: zero when all are announced.
    pub fn notifier_lag(&self) -> Duration {
        self.outbox().map_or(Duration::ZERO, |(_, since)| since.elapsed())
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Option<(FeedPosition, Instant)>> {
        self.inner.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Database reads the feed reader has made (each serves every stream).
    pub fn feed_reads(&self) -> u64 {
        self.inner.reads.load(Ordering::Relaxed)
    }

    /// Database reads streams made to catch up on their own (a resumed
    /// stream, a slow client, a gap).
    pub fn catch_ups(&self) -> u64 {
        self.inner.catch_ups.load(Ordering::Relaxed)
    }

    /// A stream is about to read the database to catch up.
    pub fn catching_up(&self) {
        self.inner.catch_ups.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends every open stream (server shutdown).
    pub fn close(&self) {
        self.inner.closing.cancel();
    }

    pub fn closing(&self) -> &CancellationToken {
        &self.inner.closing
    }

    fn feed(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.inner.feed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The reader starts at `position` (the horizon when the server starts),
    /// before any stream opens.
    pub fn start_at(&self, position: FeedPosition) {
        self.feed().position = position;
    }

    /// The reader read `events` after `after`; when `horizon` is set the read
    /// reached it (every transaction below it is finished and read).
    fn advance(&self, after: FeedPosition, events: Vec<FeedEvent>, horizon: Option<i64>) {
        self.inner.reads.fetch_add(1, Ordering::Relaxed);
        let mut feed = self.feed();
        if let Some(last) = events.last() {
            feed.position = last.position;
        }
        let position = feed.position;
        feed.known
            .retain(|p, _| *p > position && horizon.is_none_or(|h| p.0 >= h));
        drop(feed);
        if !events.is_empty() {
            let _ = self.inner.pages.send(Page {
                after,
                events: events.into(),
            });
        }
    }

    /// Whether commits are known that the reader has not read yet.
    fn behind(&self) -> bool {
        !self.feed().known.is_empty()
    }

    /// How many commits the reader still waits for.
    fn known_count(&self) -> usize {
        self.feed().known.len()
    }

    /// The newest position committed here and not yet announced.
    fn peek_outbox(&self) -> Option<FeedPosition> {
        self.outbox().map(|(position, _)| position)
    }

    /// Everything up to `position` was announced. Commits made meanwhile
    /// stay in the outbox, counted as waiting from now (they came during
    /// the NOTIFY).
    fn announced_own(&self, position: FeedPosition) {
        let mut outbox = self.outbox();
        *outbox = match *outbox {
            Some((newest, _)) if newest > position => Some((newest, Instant::now())),
            _ => None,
        };
    }

    /// The newest position committed here since the last announcement.
    #[cfg(test)]
    fn take_outbox(&self) -> Option<FeedPosition> {
        let taken = self.peek_outbox();
        if let Some(position) = taken {
            self.announced_own(position);
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        access::{Actor, ActorKind},
        model::{EventType, SessionEvent},
    };

    fn event(position: FeedPosition) -> FeedEvent {
        FeedEvent {
            event: SessionEvent {
                session_id: Uuid::nil(),
                seq: 1,
                event_type: EventType::Created,
                from_status: None,
                to_status: None,
                from_stage: None,
                to_stage: None,
                actor: Actor {
                    kind: ActorKind::System,
                    id: String::new(),
                },
                reason: String::new(),
                details: serde_json::Value::Null,
                occurred_at: chrono::Utc::now(),
            },
            position,
            mentor_id: Uuid::nil(),
            mentee_id: Uuid::nil(),
            listing_id: Uuid::nil(),
        }
    }

    #[test]
    fn lag_lasts_until_the_reader_passes_every_known_commit() {
        let hub = Hub::default();
        hub.start_at((10, 0));
        assert_eq!(hub.feed_lag(), Duration::ZERO);
        hub.committed(vec![event((12, 5))]);
        hub.announced((11, 3));
        hub.announced((9, 1));
        assert!(hub.behind(), "two commits ahead of the reader");
        std::thread::sleep(Duration::from_millis(2));
        assert!(
            hub.notifier_lag() >= Duration::from_millis(2),
            "one commit not yet announced"
        );
        assert_eq!(
            hub.take_outbox(),
            Some((12, 5)),
            "only this replica's own commits are announced"
        );
        assert_eq!(hub.take_outbox(), None);
        assert_eq!(hub.notifier_lag(), Duration::ZERO, "announced");

        // The horizon stopped the read at transaction 12: it is still pending.
        hub.advance((10, 0), vec![event((11, 3))], Some(12));
        assert_eq!(hub.position(), (11, 3));
        assert!(hub.behind());
        // A read that passes it clears the lag.
        hub.advance((11, 3), vec![event((12, 5))], Some(13));
        assert!(!hub.behind());
        assert_eq!(hub.feed_lag(), Duration::ZERO);
        assert_eq!(hub.feed_reads(), 2);
    }

    #[test]
    fn a_commit_waits_in_the_outbox_until_its_notify_went_out() {
        let hub = Hub::default();
        hub.start_at((0, 0));
        hub.committed(vec![event((5, 1))]);
        assert_eq!(hub.peek_outbox(), Some((5, 1)));
        std::thread::sleep(Duration::from_millis(2));
        // The NOTIFY is in flight (or failed): still unannounced.
        assert_eq!(hub.peek_outbox(), Some((5, 1)));
        assert!(hub.notifier_lag() >= Duration::from_millis(2));
        // A commit during the NOTIFY stays for the next one.
        hub.committed(vec![event((6, 1))]);
        hub.announced_own((5, 1));
        assert_eq!(hub.peek_outbox(), Some((6, 1)));
        hub.announced_own((6, 1));
        assert_eq!(hub.peek_outbox(), None);
        assert_eq!(hub.notifier_lag(), Duration::ZERO);
    }

    #[test]
    fn the_known_commits_stay_bounded_and_keep_the_newest_position() {
        let hub = Hub::default();
        hub.start_at((0, 0));
        for i in 1..=(KNOWN_CAP as i64 + 10) {
            hub.announced((i, 0));
        }
        assert_eq!(hub.known_count(), KNOWN_CAP);
        hub.advance((0, 0), vec![event((KNOWN_CAP as i64 + 9, 0))], None);
        assert!(hub.behind(), "the newest announced position is still ahead");
        hub.advance((0, 0), vec![event((KNOWN_CAP as i64 + 10, 0))], None);
        assert!(!hub.behind());
    }

    #[test]
    fn a_known_commit_the_horizon_passed_without_its_event_is_no_longer_pending() {
        // Its event is gone (purged): the horizon still tells the reader it was read.
        let hub = Hub::default();
        hub.start_at((10, 0));
        hub.announced((11, 3));
        hub.advance((10, 0), Vec::new(), Some(11));
        assert!(hub.behind());
        hub.advance((10, 0), Vec::new(), Some(12));
        assert!(!hub.behind());
    }
}
