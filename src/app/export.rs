//! ExportSessions (SPEC §4.4): the sessions matching a ListSessions filter,
//! streamed as CSV or JSON lines in constant memory.
//!
//! A producer task reads keyset pages of `PAGE` sessions, oldest first, each
//! page one autocommit statement (plus one for its events in JSON lines), so
//! no connection is held, let alone left idle in a transaction, while the
//! client reads. Each page becomes one chunk on a channel of `BUFFERED`
//! chunks: when the client reads slowly the producer waits (backpressure),
//! and when the client goes away the channel closes and the producer stops.
//!
//! Both formats write the same fields under the same names, in this order:
//! `CSV_COLUMNS`. Times are RFC 3339 UTC with microseconds, statuses the
//! short names (`ACTIVE`), `active_duration_us` whole microseconds as of the
//! export, `config` the session config as JSON. CSV flattens the report and
//! failure into their last three columns; JSON lines carry `report` and
//! `failure` objects and the session's `events` instead. Queue position and
//! estimated wait are left out: they are computed per read, not stored.

use crate::store::Span;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{App, now};
use crate::domain::{
    Error, Result,
    access::{Principal, Visibility},
    model::{Session, SessionEvent},
    query::{ExportFormat, ExportQuery, SortField},
};
use crate::store::sessions as store_sessions;

/// Sessions per page (and per chunk).
const PAGE: i64 = 500;
/// Chunks waiting for the client before the producer waits.
const BUFFERED: usize = 2;
/// A chunk is cut after the line that reaches this size, so messages stay
/// far below the 4 MiB that gRPC clients accept by default (a single line
/// larger than this is sent whole).
const CHUNK_BYTES: usize = 1 << 20;

/// The CSV header, in order. The first 21 are written by both formats.
pub const CSV_COLUMNS: [&str; 24] = [
    "id",
    "booking_id",
    "listing_id",
    "mentor_id",
    "mentee_id",
    "status",
    "stage",
    "start_time",
    "end_time",
    "template_id",
    "queued_at",
    "started_at",
    "ended_at",
    "active_duration_us",
    "cancel_reason",
    "created_at",
    "updated_at",
    "etag",
    "last_seq",
    "version",
    "config",
    "report_summary",
    "report_overall_score",
    "failure_error_message",
];

/// A time as exported: RFC 3339, UTC, microseconds.
struct Time(DateTime<Utc>);

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339(self.0))
    }
}

fn opt_time(t: Option<DateTime<Utc>>) -> Option<Time> {
    t.map(Time)
}

/// The fields both formats write, in `CSV_COLUMNS` order, serialized
/// straight from the session (no intermediate JSON values).
#[derive(Serialize)]
struct Common<'a> {
    id: Uuid,
    booking_id: Uuid,
    listing_id: Uuid,
    mentor_id: Uuid,
    mentee_id: Uuid,
    status: &'static str,
    stage: Option<&'a str>,
    start_time: Time,
    end_time: Time,
    template_id: &'a str,
    queued_at: Option<Time>,
    started_at: Option<Time>,
    ended_at: Option<Time>,
    active_duration_us: i64,
    cancel_reason: &'a str,
    created_at: Time,
    updated_at: Time,
    etag: String,
    last_seq: i64,
    version: i64,
    config: &'a crate::domain::config::SessionConfig,
}

fn common(s: &Session, at: DateTime<Utc>) -> Common<'_> {
    Common {
        id: s.id,
        booking_id: s.booking_id,
        listing_id: s.listing_id,
        mentor_id: s.mentor_id,
        mentee_id: s.mentee_id,
        status: s.status.as_str(),
        stage: s.stage.as_deref(),
        start_time: Time(s.start_time),
        end_time: Time(s.end_time),
        template_id: &s.config.template_id,
        queued_at: opt_time(s.queued_at),
        started_at: opt_time(s.started_at),
        ended_at: opt_time(s.ended_at),
        active_duration_us: s.active_duration(at).num_microseconds().unwrap_or(i64::MAX),
        cancel_reason: &s.cancel_reason,
        created_at: Time(s.created_at),
        updated_at: Time(s.updated_at),
        etag: crate::domain::model::etag(s.version),
        last_seq: s.last_seq,
        version: s.version,
        config: &s.config,
    }
}

/// A CSV cell: empty for null, JSON text for objects, the plain text otherwise.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn opt_cell<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn time_cell(t: Option<DateTime<Utc>>) -> String {
    t.map(rfc3339).unwrap_or_default()
}

/// The CSV of `sessions` (with the header first, when asked), as chunks of
/// whole records of about [`CHUNK_BYTES`] each.
fn csv_chunks(sessions: &[Session], header: bool, at: DateTime<Utc>) -> Result<Vec<Vec<u8>>> {
    let failed = |e: csv::Error| Error::Internal(anyhow::Error::new(e).context("writing CSV"));
    let writer = || {
        csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(Vec::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4))
    };
    let finish = |w: csv::Writer<Vec<u8>>| {
        w.into_inner()
            .map_err(|e| Error::Internal(anyhow::anyhow!("writing CSV: {e}")))
    };
    let mut chunks = Vec::new();
    let mut out = writer();
    if header {
        out.write_record(CSV_COLUMNS).map_err(failed)?;
    }
    for s in sessions {
        let c = common(s, at);
        let config = serde_json::to_string(c.config).map_err(|e| Error::Internal(e.into()))?;
        let report = s.report.as_ref();
        let row: [String; 24] = [
            c.id.to_string(),
            c.booking_id.to_string(),
            c.listing_id.to_string(),
            c.mentor_id.to_string(),
            c.mentee_id.to_string(),
            c.status.to_owned(),
            opt_cell(c.stage),
            time_cell(Some(s.start_time)),
            time_cell(Some(s.end_time)),
            c.template_id.to_owned(),
            time_cell(s.queued_at),
            time_cell(s.started_at),
            time_cell(s.ended_at),
            c.active_duration_us.to_string(),
            c.cancel_reason.to_owned(),
            time_cell(Some(s.created_at)),
            time_cell(Some(s.updated_at)),
            c.etag,
            c.last_seq.to_string(),
            c.version.to_string(),
            config,
            report.map(|r| cell(&r["summary"])).unwrap_or_default(),
            report.map(|r| cell(&r["overall_score"])).unwrap_or_default(),
            s.failure
                .as_ref()
                .map(|f| cell(&f["error_message"]))
                .unwrap_or_default(),
        ];
        out.write_record(&row).map_err(failed)?;
        out.flush().map_err(|e| Error::Internal(e.into()))?;
        if out.get_ref().len() >= CHUNK_BYTES {
            chunks.push(finish(std::mem::replace(&mut out, writer()))?);
        }
    }
    let last = finish(out)?;
    if !last.is_empty() {
        chunks.push(last);
    }
    Ok(chunks)
}

/// One event as exported.
#[derive(Serialize)]
struct Event<'a> {
    seq: i64,
    #[serde(rename = "type")]
    event_type: &'static str,
    from_status: Option<&'static str>,
    to_status: Option<&'static str>,
    from_stage: Option<&'a str>,
    to_stage: Option<&'a str>,
    actor: Actor<'a>,
    reason: &'a str,
    details: &'a Value,
    occurred_at: Time,
}

#[derive(Serialize)]
struct Actor<'a> {
    kind: &'static str,
    id: &'a str,
}

fn event(e: &SessionEvent) -> Event<'_> {
    Event {
        seq: e.seq,
        event_type: e.event_type.as_str(),
        from_status: e.from_status.map(|s| s.as_str()),
        to_status: e.to_status.map(|s| s.as_str()),
        from_stage: e.from_stage.as_deref(),
        to_stage: e.to_stage.as_deref(),
        actor: Actor {
            kind: e.actor.kind.as_str(),
            id: &e.actor.id,
        },
        reason: &e.reason,
        details: &e.details,
        occurred_at: Time(e.occurred_at),
    }
}

/// One JSON line: the common fields, then report, failure and events.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    common: Common<'a>,
    report: &'a Option<Value>,
    failure: &'a Option<Value>,
    events: Vec<Event<'a>>,
}

/// The JSON lines of `sessions`, each with its events (`events` is sorted by
/// session, then seq), as chunks of whole lines of about [`CHUNK_BYTES`] each.
fn json_chunks(sessions: &[Session], events: &[SessionEvent], at: DateTime<Utc>) -> Result<Vec<Vec<u8>>> {
    let mut chunks = Vec::new();
    let mut out = Vec::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4);
    for s in sessions {
        let from = events.partition_point(|e| e.session_id < s.id);
        let to = events.partition_point(|e| e.session_id <= s.id);
        let line = Line {
            common: common(s, at),
            report: &s.report,
            failure: &s.failure,
            events: events[from..to].iter().map(event).collect(),
        };
        serde_json::to_writer(&mut out, &line).map_err(|e| Error::Internal(e.into()))?;
        out.push(b'\n');
        if out.len() >= CHUNK_BYTES {
            chunks.push(std::mem::replace(
                &mut out,
                Vec::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4),
            ));
        }
    }
    if !out.is_empty() {
        chunks.push(out);
    }
    Ok(chunks)
}

/// The stream of an export: chunks of whole lines, or the error that ended
/// it. When the server shuts down it ends at once with UNAVAILABLE, whether
/// or not the client is reading, so shutdown never waits on an export and a
/// cut-off export never looks complete.
pub struct ExportStream {
    chunks: mpsc::Receiver<Result<Vec<u8>>>,
    closing: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    ended: bool,
}

fn shutting_down() -> Error {
    Error::Unavailable("the server is shutting down; export again".into())
}

impl tokio_stream::Stream for ExportStream {
    type Item = Result<Vec<u8>>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::{future::Future, task::Poll};
        if self.ended {
            return Poll::Ready(None);
        }
        if self.closing.as_mut().poll(cx).is_ready() {
            self.ended = true;
            return Poll::Ready(Some(Err(shutting_down())));
        }
        self.chunks.poll_recv(cx)
    }
}

impl App {
    /// Starts an export of the sessions the caller may see that match the
    /// filter; the chunks arrive on the returned stream.
    pub async fn export_sessions(&self, who: &Principal, q: ExportQuery) -> Result<ExportStream> {
        let permit = self.exports.acquire(&who.user_id.to_string())?;
        let (tx, rx) = mpsc::channel(BUFFERED);
        let app = self.clone();
        let visibility = who.visibility();
        let closing = self.hub.closing().clone();
        tokio::spawn(async move {
            let _permit = permit;
            let outcome = tokio::select! {
                outcome = app.export_pages(q, visibility, &tx) => outcome,
                // The stream reports the shutdown; the producer just stops.
                _ = closing.cancelled() => Ok(()),
            };
            if let Err(e) = outcome {
                if let Error::Internal(cause) = &e {
                    tracing::error!(error = %format!("{cause:#}"), "export failed");
                }
                // The client may be gone already; nothing else to do then.
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(ExportStream {
            chunks: rx,
            closing: Box::pin(self.hub.closing().clone().cancelled_owned()),
            ended: false,
        })
    }

    /// Sends every page in turn; returns early, without error, when the client is gone.
    async fn export_pages(
        &self,
        q: ExportQuery,
        visibility: Visibility,
        tx: &mpsc::Sender<Result<Vec<u8>>>,
    ) -> Result<()> {
        let format = q.format.unwrap_or(self.rules.history.export_format);
        let filter = crate::domain::query::ListFilter {
            sort: SortField::CreatedAt,
            descending: false,
            ..q.filter
        };
        let mut after: Option<(DateTime<Utc>, Uuid)> = None;
        loop {
            // Each read bounded: a silent connection ends the export
            // UNAVAILABLE instead of holding it (and its client) for good.
            let (waits, bound) = (&self.waits, self.rules.silent_connection);
            let read = store_sessions::list(&self.pool, &filter, visibility, after, PAGE);
            let page = crate::store::bounded(waits, Span::Short, bound, read).await?;
            let at = now();
            let chunks = match format {
                ExportFormat::Csv => csv_chunks(&page, after.is_none(), at)?,
                ExportFormat::JsonLines => {
                    let ids: Vec<Uuid> = page.iter().map(|s| s.id).collect();
                    let read = store_sessions::events_of(&self.pool, &ids);
                    let events = crate::store::bounded(waits, Span::Short, bound, read).await?;
                    json_chunks(&page, &events, at)?
                }
            };
            for chunk in chunks {
                if tx.send(Ok(chunk)).await.is_err() {
                    return Ok(());
                }
            }
            match page.last() {
                Some(last) if page.len() as i64 == PAGE => after = Some((last.created_at, last.id)),
                _ => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_csv_export_is_its_header() {
        let chunks = csv_chunks(&[], true, Utc::now()).expect("header");
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            String::from_utf8(chunks[0].clone()).expect("utf-8"),
            format!("{}\r\n", CSV_COLUMNS.join(","))
        );
        assert_eq!(cell(&Value::Null), "");
        assert_eq!(cell(&serde_json::json!({"a": 1})), r#"{"a":1}"#);
    }
}
