//! The feed reader: the one reader of the feed of all events on a replica.
//! Woken by a commit, another replica's announcement or the backstop, it
//! reads every event after its position and publishes each page to every
//! stream of the replica, only once the page is on the synchronous standby
//! (`store::feed::replicated`). How it follows the horizon:
//! docs/ARCHITECTURE.md, "Watching".

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::Hub;
use crate::store::{
    Span,
    feed::{self as store_feed, FeedPage},
    waits::Waits,
};

/// Events per read.
pub(crate) const PAGE: i64 = 500;
/// At most one read per this long: under load one read serves the commits
/// of many transactions.
pub(crate) const READ_EVERY: Duration = Duration::from_millis(5);
/// At most one read per this long while no stream on this replica follows
/// the feed: the reader only keeps its position (and the lag) current then.
pub(crate) const UNWATCHED_READ_EVERY: Duration = Duration::from_millis(50);
/// The first retry while known commits wait below the horizon…
const FIRST_RETRY: Duration = Duration::from_millis(1);
/// …and the longest, so the tail is read soon after the horizon moves even
/// when what held it back commits nothing the reader hears of (an aborted
/// transaction, another client).
const LAST_RETRY: Duration = Duration::from_millis(50);
/// Lag past which the reader names the transaction holding it back.
const LAG_WARNING: Duration = Duration::from_secs(1);
/// At most one such warning per this long.
const WARNING_EVERY: Duration = Duration::from_secs(10);

/// Reads the feed for this replica, from where the hub starts
/// (`Hub::start_at`), until `shutdown`. A read that gets no answer within
/// `silent_after` is given up (`store::bounded`) and read again.
pub(crate) async fn run(pool: PgPool, hub: Hub, silent_after: Duration, waits: Waits, shutdown: CancellationToken) {
    let mut retry: Option<Duration> = None;
    let mut warned: Option<Instant> = None;
    let mut standbys = Standbys::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hub.inner.wake.notified() => {}
            _ = tokio::time::sleep(retry.unwrap_or(hub.inner.backstop)) => {}
        }
        let read_at = tokio::time::Instant::now();
        let (position, waiting) = (hub.position(), hub.known_count());
        match crate::store::bounded(&waits, Span::Short, silent_after, read_all(&pool, &hub, &mut standbys)).await {
            Ok(()) if hub.behind() => {
                // Start over after progress; back off while the horizon stands still.
                let progress = hub.position() != position || hub.known_count() < waiting;
                let next = match retry {
                    Some(d) if !progress => d * 2,
                    _ => FIRST_RETRY,
                };
                retry = Some(next.min(LAST_RETRY).min(hub.inner.backstop));
            }
            Ok(()) => retry = None,
            Err(err) => {
                tracing::warn!(error = %err, "watch feed read failed; retrying");
                retry = Some(hub.inner.backstop.min(Duration::from_millis(200)));
            }
        }
        let every = if hub.watched() {
            READ_EVERY
        } else {
            UNWATCHED_READ_EVERY
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(read_at + every) => {}
        }
        let lag = hub.feed_lag();
        if lag >= LAG_WARNING && warned.is_none_or(|at| at.elapsed() >= WARNING_EVERY) {
            warned = Some(Instant::now());
            warn_lag(&pool, lag).await;
        }
    }
}

/// Whether the database has synchronous standbys, as last read (at most
/// once a second): where it has none, a page needs no barrier.
#[derive(Debug, Default)]
struct Standbys {
    configured: bool,
    read_at: Option<Instant>,
}

impl Standbys {
    async fn configured(&mut self, pool: &PgPool) -> Result<bool, crate::domain::Error> {
        if self.read_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            self.configured = store_feed::synchronous_standbys(pool).await?;
            self.read_at = Some(Instant::now());
        }
        Ok(self.configured)
    }
}

/// Reads until a page comes back short: the feed is read up to the horizon.
async fn read_all(pool: &PgPool, hub: &Hub, standbys: &mut Standbys) -> Result<(), crate::domain::Error> {
    loop {
        let after = hub.position();
        let FeedPage { horizon, events } = store_feed::feed_page(pool, after, PAGE).await?;
        if !events.is_empty() && standbys.configured(pool).await? {
            // Published only once safe from a failover (the page is read
            // again, on the new primary, if this fails).
            store_feed::replicated(pool).await?;
        }
        let more = events.len() as i64 == PAGE;
        hub.advance(after, events, (!more).then_some(horizon));
        if !more {
            return Ok(());
        }
    }
}

/// Tells the operator which transaction holds the feed back.
async fn warn_lag(pool: &PgPool, lag: Duration) {
    match store_feed::oldest_transaction(pool).await {
        Ok(Some(t)) => tracing::warn!(
            lag_ms = lag.as_millis() as u64,
            pid = t.pid,
            application = %t.application,
            state = %t.state,
            open_for_ms = t.open_for_ms,
            "watch feed held back by an open transaction: WatchSessions deliver nothing it started before until it ends"
        ),
        Ok(None) => tracing::warn!(lag_ms = lag.as_millis() as u64, "watch feed lagging"),
        Err(err) => tracing::warn!(lag_ms = lag.as_millis() as u64, error = %err, "watch feed lagging"),
    }
}
