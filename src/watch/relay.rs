//! Between replicas: the notifier announces this replica's commits, the
//! listener hears the others'. A NOTIFY is a hint only ("replica R committed
//! up to feed position P"); content is always read from the table by the
//! feed reader, so a lost or repeated NOTIFY can delay an event (until the
//! backstop) but never lose or repeat it.

use std::time::Duration;

use sqlx::{PgPool, postgres::PgListener};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Hub;
use crate::domain::model::FeedPosition;

/// The NOTIFY channel.
pub(crate) const CHANNEL: &str = "session_events";
/// At most one NOTIFY per replica per this long: under load, one carries the
/// commits of many transactions.
pub(crate) const ANNOUNCE_EVERY: Duration = Duration::from_millis(5);
/// Wait before reconnecting a failed listener.
const RECONNECT: Duration = Duration::from_millis(500);

fn payload(replica: Uuid, p: FeedPosition) -> String {
    format!("{replica}:{}:{}", p.0, p.1)
}

fn parse(payload: &str) -> Option<(Uuid, FeedPosition)> {
    let mut parts = payload.split(':');
    let replica = Uuid::try_parse(parts.next()?).ok()?;
    let txid = parts.next()?.parse().ok()?;
    let id = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((replica, (txid, id)))
}

/// Announces this replica's commits to the others, in its own autocommit
/// statements, until `shutdown`. What is announced leaves the outbox only
/// once the NOTIFY went out (so the notifier's lag shows a failing one); a
/// failed NOTIFY is tried again after [`RECONNECT`], and meanwhile the other
/// replicas' backstop reads the feed anyway.
pub(crate) async fn announce(pool: PgPool, hub: Hub, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hub.inner.announce.notified() => {}
        }
        let Some(position) = hub.peek_outbox() else { continue };
        let sent = sqlx::query!(
            "SELECT pg_notify($1, $2)",
            CHANNEL,
            payload(hub.inner.replica, position)
        )
        .execute(&pool)
        .await;
        let pause = match sent {
            Ok(_) => {
                hub.announced_own(position);
                ANNOUNCE_EVERY
            }
            Err(err) => {
                tracing::warn!(error = %err, "announcing commits to the other replicas failed; retrying");
                hub.inner.announce.notify_one();
                RECONNECT
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Keeps this replica's LISTEN connection and hands the other replicas'
/// announcements to the feed reader, until `shutdown`.
pub(crate) async fn listen(pool: PgPool, hub: Hub, shutdown: CancellationToken) {
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match connected.await {
            Ok(l) => l,
            Err(err) => {
                tracing::warn!(error = %err, "watch listener cannot LISTEN; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RECONNECT) => continue,
                }
            }
        };
        // LISTEN is active again: anything announced while it was not must be read.
        hub.resync();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = listener.try_recv() => match received {
                    Ok(Some(n)) => match parse(n.payload()) {
                        // This replica's own announcement: its reader already knows.
                        Some((replica, _)) if replica == hub.inner.replica => {}
                        Some((_, position)) => hub.announced(position),
                        None => hub.resync(),
                    },
                    // The connection dropped: reconnect, LISTEN, and only then resync,
                    // so nothing announced before LISTEN is active goes unnoticed.
                    Ok(None) => {
                        tracing::warn!("watch listener connection lost; reconnecting");
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "watch listener failed; reconnecting");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(RECONNECT) => break,
                        }
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
    fn announcements_round_trip_and_garbage_is_refused() {
        let replica = Uuid::new_v4();
        assert_eq!(parse(&payload(replica, (42, 7))), Some((replica, (42, 7))));
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse(&format!("{replica}:1")), None);
        assert_eq!(parse(&format!("{replica}:1:2:3")), None);
    }
}
