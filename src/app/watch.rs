//! WatchSession and WatchSessions (SPEC §4.5): a producer task per stream
//! reads from the database after its cursor, sends into a small bounded
//! channel (so a slow client holds back only its own producer), and sleeps
//! until a hint, the backstop, the client leaving or shutdown.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use tokio::sync::mpsc;

use super::App;
use crate::domain::{
    Error, Result,
    access::Principal,
    model::{EventType, Session, SessionEvent},
    query::{FeedPosition, FeedWatch, SessionWatch},
};
use crate::store::sessions as store_sessions;
use crate::watch;

/// Items a stream holds before its producer waits for the client.
const STREAM_BUFFER: usize = 16;
/// Rows read per query while catching up.
const PAGE: i64 = 200;

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

/// Sends unless the client left or the server is closing; false means stop.
/// A stalled client therefore never holds up shutdown.
async fn deliver<T>(tx: &mpsc::Sender<T>, hub: &watch::Hub, item: T) -> bool {
    tokio::select! {
        sent = tx.send(item) => sent.is_ok(),
        _ = hub.closing().cancelled() => false,
    }
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

impl App {
    /// Opens a WatchSession stream: the snapshot (unless `after_seq`), then
    /// every event in seq order; it ends after the terminal event.
    pub async fn watch_session(
        &self,
        who: &Principal,
        watch: SessionWatch,
    ) -> Result<mpsc::Receiver<Result<SessionItem>>> {
        let SessionWatch {
            session_id: id,
            after_seq,
        } = watch;
        // Subscribe before reading, so nothing committed after the read goes unnoticed.
        let mut hints = self.hub.subscribe();
        let snapshot = self.get_session(who, id).await?;
        if let Some(after) = after_seq
            && after > snapshot.last_seq
        {
            return Err(Error::invalid(
                "after_seq",
                format!("is beyond the session's last event ({})", snapshot.last_seq),
            ));
        }
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let app = self.clone();
        tokio::spawn(async move {
            let mut cursor = match after_seq {
                Some(seq) => seq,
                None => {
                    let seq = snapshot.last_seq;
                    if tx
                        .send(Ok(SessionItem::Snapshot(Box::new(snapshot.clone()))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    seq
                }
            };
            // A session already over has nothing after its last event.
            let ended_at = snapshot.status.is_terminal().then_some(snapshot.last_seq);
            loop {
                loop {
                    let events = match store_sessions::events(&app.pool, id, cursor, PAGE).await {
                        Ok(events) => events,
                        Err(err) => {
                            tracing::warn!(error = %err, session_id = %id, "watch read failed; retrying");
                            break;
                        }
                    };
                    let full = events.len() as i64 == PAGE;
                    for e in events {
                        cursor = e.seq;
                        let last = ends_session(&e);
                        if !deliver(&tx, &app.hub, Ok(SessionItem::Event(e))).await || last {
                            return;
                        }
                    }
                    if !full {
                        break;
                    }
                }
                if ended_at.is_some_and(|end| cursor >= end) {
                    return;
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    go_on = watch::wait(&app.hub, &mut hints, |h| h.is_news_for(id, cursor)) => if !go_on { return },
                }
            }
        });
        Ok(rx)
    }

    /// Opens a WatchSessions feed of the events the caller may see, from
    /// `cursor` (exclusive) or from now.
    pub async fn watch_sessions(&self, who: &Principal, watch: FeedWatch) -> Result<mpsc::Receiver<Result<FeedItem>>> {
        let FeedWatch { filter, cursor } = watch;
        let visibility = who.visibility();
        let mut hints = self.hub.subscribe();
        let mut position = match cursor {
            Some(p) => p,
            None => store_sessions::feed_horizon(&self.pool).await?,
        };
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let app = self.clone();
        tokio::spawn(async move {
            loop {
                loop {
                    let rows = match store_sessions::feed_page(&app.pool, position, &filter, visibility, PAGE).await {
                        Ok(rows) => rows,
                        Err(err) => {
                            tracing::warn!(error = %err, "feed read failed; retrying");
                            break;
                        }
                    };
                    let full = rows.len() as i64 == PAGE;
                    for row in rows {
                        position = row.position;
                        if row.matches {
                            let item = FeedItem {
                                event: row.event,
                                position,
                            };
                            if !deliver(&tx, &app.hub, Ok(item)).await {
                                return;
                            }
                        }
                    }
                    if !full {
                        break;
                    }
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    go_on = watch::wait(&app.hub, &mut hints, |_| true) => if !go_on { return },
                }
            }
        });
        Ok(rx)
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
