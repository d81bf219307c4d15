//! The two streaming shapes over HTTP: a live watch as Server-Sent Events,
//! and an export as a download of its raw bytes.
//!
//! A call refused before it streams (no token, not found, a bad filter) is
//! answered as any refused call is, with its HTTP status. Once streaming:
//! - an event stream sends each message as `data:` (canonical JSON) with
//!   its resume position as `id:`, a comment line when idle, and a failure
//!   as `event: error` with the status JSON before it ends;
//! - a download sends each chunk's bytes as they come, in constant memory;
//!   a failure then cuts the response short, so the client sees it incomplete.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use prost_reflect::{DynamicMessage, Kind, Value};
use tonic::{Code, Status};

use super::{
    reply,
    routes::{Route, Shared},
};

type Frame = Result<http_body::Frame<Bytes>, Status>;

pub(super) async fn respond(
    shared: &Shared,
    route: &Route,
    response: http::Response<tonic::body::Body>,
    built: Arc<OnceLock<DynamicMessage>>,
) -> http::Response<tonic::body::Body> {
    let frames = reply::Frames::new(response);
    if let Some(status) = frames.refused() {
        return reply::error(&status, &shared.status_type, None);
    }
    let output = route.rpc.output();
    let download = output
        .get_field_by_name("chunk")
        .is_some_and(|f| f.kind() == Kind::Bytes && !f.is_list());
    if download {
        // The format asked for (CSV 1, JSON lines 2), else the configured one.
        let asked = built
            .get()
            .and_then(|m| m.get_field_by_name("format").and_then(|v| v.as_enum_number()));
        let json_lines = match asked {
            Some(1) => false,
            Some(2) => true,
            _ => shared.exports_json_lines,
        };
        let (content_type, name) = if json_lines {
            ("application/x-ndjson", "sessions.jsonl")
        } else {
            ("text/csv; charset=utf-8", "sessions.csv")
        };
        let body = futures_util::stream::unfold(Some(frames), move |state| chunk(state, output.clone()));
        let mut response = http::Response::new(tonic::body::Body::new(http_body_util::StreamBody::new(body)));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
        return response;
    }
    let status_type = shared.status_type.clone();
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + shared.keepalive, shared.keepalive);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = Some((frames, keepalive));
    let body = futures_util::stream::unfold(state, move |state| event(state, output.clone(), status_type.clone()));
    let mut response = http::Response::new(tonic::body::Body::new(http_body_util::StreamBody::new(body)));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The next chunk of a download.
async fn chunk(
    state: Option<reply::Frames>,
    output: prost_reflect::MessageDescriptor,
) -> Option<(Frame, Option<reply::Frames>)> {
    let mut frames = state?;
    match frames.next().await {
        Ok(message) => {
            let bytes = DynamicMessage::decode(output, message).ok().and_then(|m| {
                match m.get_field_by_name("chunk").as_deref() {
                    Some(Value::Bytes(b)) => Some(b.clone()),
                    _ => None,
                }
            });
            match bytes {
                Some(b) => Some((Ok(http_body::Frame::data(b)), Some(frames))),
                None => Some((Err(Status::internal("a chunk did not decode")), None)),
            }
        }
        Err(status) if status.code() == Code::Ok => None,
        Err(status) => {
            tracing::warn!(code = ?status.code(), message = status.message(), "a download failed while streaming");
            Some((Err(status), None))
        }
    }
}

type EventState = Option<(reply::Frames, tokio::time::Interval)>;

/// The next event (or keep-alive comment) of an event stream.
async fn event(
    state: EventState,
    output: prost_reflect::MessageDescriptor,
    status_type: prost_reflect::MessageDescriptor,
) -> Option<(Frame, EventState)> {
    let (mut frames, mut keepalive) = state?;
    let text = tokio::select! {
        next = frames.next() => match next {
            Ok(message) => match DynamicMessage::decode(output, message) {
                Ok(message) => {
                    let mut text = String::new();
                    if let Some(id) = event_id(&message) {
                        text.push_str(&format!("id: {id}\n"));
                    }
                    text.push_str("data: ");
                    text.push_str(&String::from_utf8_lossy(&reply::json(&message)));
                    text.push_str("\n\n");
                    text
                }
                Err(_) => return error_event(&Status::internal("an event did not decode"), &status_type),
            },
            Err(status) if status.code() == Code::Ok => return None,
            Err(status) => return error_event(&status, &status_type),
        },
        _ = keepalive.tick() => ": keep-alive\n\n".to_owned(),
    };
    Some((Ok(http_body::Frame::data(Bytes::from(text))), Some((frames, keepalive))))
}

fn error_event(status: &Status, status_type: &prost_reflect::MessageDescriptor) -> Option<(Frame, EventState)> {
    let json = String::from_utf8_lossy(&reply::status_json(status, status_type)).into_owned();
    let text = format!("event: error\ndata: {json}\n\n");
    Some((Ok(http_body::Frame::data(Bytes::from(text))), None))
}

/// Where a stream resumes after this message: a feed's `cursor`, or an
/// event's `seq` (sent back as `Last-Event-ID`).
fn event_id(message: &DynamicMessage) -> Option<String> {
    if let Some(Value::String(cursor)) = message.get_field_by_name("cursor").as_deref()
        && !cursor.is_empty()
    {
        return Some(cursor.clone());
    }
    match message.get_field_by_name("event").as_deref() {
        Some(Value::Message(event)) if message.has_field_by_name("event") => {
            match event.get_field_by_name("seq").as_deref() {
                Some(Value::I64(seq)) => Some(seq.to_string()),
                _ => None,
            }
        }
        _ => None,
    }
}
