//! Live delivery of session events to watchers, on one replica or many.
//!
//! Each replica keeps one LISTEN connection ([`listen`]). A notification is a
//! hint only ("session S has seq N"); watchers read the content from the
//! database after their own cursor, so a lost or duplicated hint can delay an
//! event but never lose or repeat it. Lost hints are covered twice: after the
//! listener reconnects (and LISTENs again) it tells every watcher to resync,
//! and every watcher re-reads anyway after the backstop ([`BACKSTOP`] by
//! default) without news.
//!
//! Hints travel on one `broadcast` channel per replica: writers never wait for
//! watchers, and a watcher that falls behind (lags the channel) simply
//! re-reads from the database.

use std::time::Duration;

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often watchers re-read even without a notification (the default).
pub const BACKSTOP: Duration = Duration::from_secs(1);

/// The NOTIFY channel written by the `session_events_notify` trigger.
pub const CHANNEL: &str = "session_events";

/// Hints buffered per replica before slow receivers lag (and resync).
const HINT_BUFFER: usize = 1024;

/// Something may have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// An event of this session committed.
    Event { session_id: Uuid, seq: i64 },
    /// Anything may have changed: re-read.
    Resync,
}

impl Hint {
    /// Whether a watcher of `session_id` that has read up to `seq` should
    /// re-read. An event it already has is no news: the replica that made a
    /// change hears of it twice (its own unit of work, then NOTIFY).
    pub fn is_news_for(&self, session_id: Uuid, seq: i64) -> bool {
        match self {
            Hint::Event { session_id: s, seq: n } => *s == session_id && *n > seq,
            Hint::Resync => true,
        }
    }

    fn parse(payload: &str) -> Hint {
        payload
            .split_once(':')
            .and_then(|(id, seq)| {
                Some(Hint::Event {
                    session_id: Uuid::try_parse(id).ok()?,
                    seq: seq.parse().ok()?,
                })
            })
            .unwrap_or(Hint::Resync)
    }
}

/// The per-replica fan-out of hints, and the signal that ends every stream
/// at shutdown.
#[derive(Debug, Clone)]
pub struct Hub {
    hints: broadcast::Sender<Hint>,
    closing: CancellationToken,
    backstop: Duration,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(BACKSTOP)
    }
}

impl Hub {
    /// A hub whose watchers re-read at least every `backstop`.
    pub fn new(backstop: Duration) -> Self {
        Hub {
            hints: broadcast::channel(HINT_BUFFER).0,
            closing: CancellationToken::new(),
            backstop,
        }
    }

    /// A receiver of every hint from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Hint> {
        self.hints.subscribe()
    }

    pub fn publish(&self, hint: Hint) {
        // No receivers is fine: nobody is watching.
        let _ = self.hints.send(hint);
    }

    /// Ends every open stream (server shutdown).
    pub fn close(&self) {
        self.closing.cancel();
    }

    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }
}

/// Waits for the next hint that `wanted` accepts, the hub's backstop, or the end.
/// Returns false when the watcher should stop (shutdown).
pub async fn wait(hub: &Hub, hints: &mut broadcast::Receiver<Hint>, wanted: impl Fn(&Hint) -> bool) -> bool {
    let backstop = tokio::time::sleep(hub.backstop);
    tokio::pin!(backstop);
    loop {
        tokio::select! {
            _ = hub.closing.cancelled() => return false,
            _ = &mut backstop => return true,
            hint = hints.recv() => match hint {
                Ok(h) if wanted(&h) => return true,
                Ok(_) => continue,
                // Fell behind the channel: something changed, re-read.
                Err(broadcast::error::RecvError::Lagged(_)) => return true,
                Err(broadcast::error::RecvError::Closed) => return false,
            },
        }
    }
}

/// Keeps this replica's LISTEN connection and republishes its notifications
/// as hints, until `shutdown`.
pub async fn listen(pool: PgPool, hub: Hub, shutdown: CancellationToken) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(err) => {
                tracing::warn!(error = %err, "watch listener cannot connect; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        if let Err(err) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %err, "LISTEN failed; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
            }
        }
        // LISTEN is active again: anything committed while it was not must be re-read.
        hub.publish(Hint::Resync);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = listener.try_recv() => match received {
                    Ok(Some(n)) => hub.publish(Hint::parse(n.payload())),
                    // The connection dropped: reconnect, LISTEN, and only then resync,
                    // so nothing committed before LISTEN is active goes unnoticed.
                    Ok(None) => {
                        tracing::warn!("watch listener connection lost; reconnecting");
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "watch listener failed; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_into_hints() {
        let id = Uuid::new_v4();
        assert_eq!(Hint::parse(&format!("{id}:7")), Hint::Event { session_id: id, seq: 7 });
        assert_eq!(Hint::parse("garbage"), Hint::Resync);
        assert!(Hint::Resync.is_news_for(id, 7));
        assert!(Hint::Event { session_id: id, seq: 8 }.is_news_for(id, 7));
        assert!(
            !Hint::Event { session_id: id, seq: 7 }.is_news_for(id, 7),
            "already read"
        );
        assert!(
            !Hint::Event {
                session_id: Uuid::new_v4(),
                seq: 9
            }
            .is_news_for(id, 7)
        );
    }
}
