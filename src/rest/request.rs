//! An HTTP request made into its RPC's request message: the JSON body (the
//! canonical proto3 JSON mapping, either field name accepted, unknown fields
//! refused), then the path's values and the query parameters over it, then
//! the headers that stand for fields (`Idempotency-Key` for `request_id`,
//! `If-Match` for `etag`, `Last-Event-ID` for a stream's resume position).
//!
//! Every refusal is an INVALID_ARGUMENT naming the offending field, made
//! here once and mapped to HTTP like any other status.

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value,
};

use super::routes::{BodyRule, Route};
use crate::domain::Error;

/// What the HTTP request carried for its message, besides the body.
#[derive(Debug)]
pub(crate) struct Parts {
    /// The path's values (`session_id`, `mentor.id`).
    pub captures: Vec<(String, String)>,
    /// The raw query string.
    pub query: Option<String>,
    /// The body's `Content-Type`.
    pub content_type: Option<String>,
    pub idempotency_key: Option<String>,
    /// `If-Match`, already read: `None` for absent or `*`.
    pub if_match: Result<Option<String>, Error>,
    pub last_event_id: Option<String>,
    /// A refusal of a header read before the call (a malformed
    /// `Request-Timeout`), reported here, after the token is checked.
    pub refused: Option<Error>,
}

/// Reads an `If-Match` header: a strong etag (`"3"`) is the version the
/// change needs; `*` matches any; a weak or malformed one is refused (a
/// weak etag cannot guard a change, RFC 9110 §13.1.1).
pub(crate) fn if_match(raw: Option<&http::HeaderValue>) -> Result<Option<String>, Error> {
    let Some(raw) = raw else { return Ok(None) };
    let bad = || Error::invalid("If-Match", "must be * or one strong entity tag, such as \"3\"");
    let raw = raw.to_str().map_err(|_| bad())?.trim();
    if raw == "*" {
        return Ok(None);
    }
    if raw.starts_with("W/") {
        return Err(Error::invalid(
            "If-Match",
            "a weak entity tag cannot guard a change; send the strong one from ETag",
        ));
    }
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(tag) if !tag.contains('"') => Ok(Some(tag.to_owned())),
        _ => Err(bad()),
    }
}

/// The request message of `route` from the request's body and parts.
pub(crate) fn build(route: &Route, body: &Bytes, parts: &Parts) -> Result<DynamicMessage, Error> {
    if let Some(err) = &parts.refused {
        return Err(clone_error(err));
    }
    let input = route.rpc.input();
    let mut message = match &route.body {
        BodyRule::None => DynamicMessage::new(input.clone()),
        rule => {
            check_content_type(parts.content_type.as_deref(), body)?;
            match rule {
                BodyRule::Field(field) => {
                    let mut message = DynamicMessage::new(input.clone());
                    let Some(f) = input.get_field_by_name(field) else {
                        return Err(Error::invalid("body", "the route's body field is missing"));
                    };
                    let Kind::Message(inner) = f.kind() else {
                        return Err(Error::invalid("body", "the route's body field is not a message"));
                    };
                    if !body.is_empty() {
                        message.set_field(&f, Value::Message(from_json(inner, body, f.json_name())?));
                    }
                    message
                }
                _ if body.is_empty() => DynamicMessage::new(input.clone()),
                _ => from_json(input.clone(), body, "")?,
            }
        }
    };
    let params = params(&input, parts)?;
    if let Some(params) = params {
        message
            .merge(params.encode_to_vec().as_slice())
            .map_err(|e| Error::invalid("query", e.to_string()))?;
    }
    if let Some(key) = &parts.idempotency_key {
        set_request_id(&mut message, key)?;
    }
    if let Some(tag) = parts.if_match.as_ref().map_err(clone_error)? {
        set_etag(&mut message, route, tag)?;
    }
    if let Some(id) = &parts.last_event_id {
        set_resume(&mut message, id)?;
    }
    // A new event stream's first event says where it starts, so that its
    // id can resume a stream that ends before any other event (a resumed
    // one starts where its Last-Event-ID says).
    if parts.last_event_id.is_none()
        && let Some(f) = message.descriptor().get_field_by_name("send_start_position")
    {
        message.set_field(&f, Value::Bool(true));
    }
    Ok(message)
}

fn clone_error(err: &Error) -> Error {
    match err {
        Error::InvalidArgument(v) => Error::InvalidArgument(v.clone()),
        other => Error::invalid("request", other.to_string()),
    }
}

fn check_content_type(content_type: Option<&str>, body: &Bytes) -> Result<(), Error> {
    if body.is_empty() {
        return Ok(());
    }
    let essence = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/json") => Ok(()),
        Some(other) => Err(Error::invalid(
            "Content-Type",
            format!("{other} is not accepted; send application/json"),
        )),
        None => Err(Error::invalid(
            "Content-Type",
            "a body needs Content-Type: application/json",
        )),
    }
}

/// One message from JSON, naming the offending field on a refusal.
fn from_json(desc: MessageDescriptor, body: &[u8], prefix: &str) -> Result<DynamicMessage, Error> {
    let mut value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(if prefix.is_empty() { "body" } else { prefix }, e.to_string()))?;
    camel_case_masks(&mut value, &desc);
    let mut track = serde_path_to_error::Track::new();
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let parsed = DynamicMessage::deserialize_with_options(
        desc,
        serde_path_to_error::Deserializer::new(value, &mut track),
        &options,
    );
    let at = |track: serde_path_to_error::Track| {
        let path = track.path().to_string();
        // `?` stands for a place serde could not name (broken syntax).
        let path = if path.starts_with('?') { String::new() } else { path };
        match (prefix, path.as_str()) {
            ("", "." | "") => "body".to_owned(),
            ("", p) => p.to_owned(),
            (pre, "." | "") => pre.to_owned(),
            (pre, p) => format!("{pre}.{p}"),
        }
    };
    let message = match parsed {
        Ok(m) => m,
        Err(e) => {
            let description = e.to_string();
            let mut field = at(track);
            // An unknown field is named itself, not only its parent.
            if let Some(name) = description
                .strip_prefix("unrecognized field name '")
                .and_then(|rest| rest.split('\'').next())
            {
                field = if field == "body" {
                    name.to_owned()
                } else {
                    format!("{field}.{name}")
                };
            }
            return Err(Error::invalid(field, description));
        }
    };
    Ok(message)
}

/// Field masks are accepted with snake_case paths too (the canonical JSON
/// form is lowerCamelCase): every mask in `value` is written in the latter.
fn camel_case_masks(value: &mut serde_json::Value, desc: &MessageDescriptor) {
    let serde_json::Value::Object(map) = value else { return };
    for (key, item) in map.iter_mut() {
        let Some(f) = field(desc, key) else { continue };
        let Kind::Message(inner) = f.kind() else { continue };
        if inner.full_name() == "google.protobuf.FieldMask" {
            if let serde_json::Value::String(paths) = item {
                *paths = camel_case_paths(paths);
            }
        } else if !f.is_map() && !is_scalar_message(&inner) {
            match item {
                serde_json::Value::Array(items) => items.iter_mut().for_each(|i| camel_case_masks(i, &inner)),
                item => camel_case_masks(item, &inner),
            }
        }
    }
}

/// `check_in_interval,notifications.notify_on_blocker` →
/// `checkInInterval,notifications.notifyOnBlocker`.
pub(crate) fn camel_case_paths(paths: &str) -> String {
    let camel = |segment: &str| {
        let mut out = String::with_capacity(segment.len());
        let mut upper = false;
        for c in segment.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                out.extend(c.to_uppercase());
                upper = false;
            } else {
                out.push(c);
            }
        }
        out
    };
    paths
        .split(',')
        .map(|path| path.trim().split('.').map(camel).collect::<Vec<_>>().join("."))
        .collect::<Vec<_>>()
        .join(",")
}

/// The path's values and the query parameters as one message, to merge over
/// the body's. Names may be proto (`page_size`) or JSON (`pageSize`); a
/// repeated field takes the parameter once per value.
fn params(input: &MessageDescriptor, parts: &Parts) -> Result<Option<DynamicMessage>, Error> {
    let query = parts
        .query
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if parts.captures.is_empty() && query.is_empty() {
        return Ok(None);
    }
    let mut tree = serde_json::Map::new();
    for (name, value) in parts.captures.iter().chain(&query) {
        if name.split('.').count() > MAX_PARAM_DEPTH {
            return Err(Error::invalid(
                truncated(name),
                format!("nests deeper than {MAX_PARAM_DEPTH} fields"),
            ));
        }
        put(&mut tree, input, name, value)?;
    }
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    DynamicMessage::deserialize_with_options(input.clone(), serde_json::Value::Object(tree), &options)
        .map(Some)
        .map_err(|e| Error::invalid("query", e.to_string()))
}

/// The deepest field path a query parameter may name (`a.b.c` is 3).
const MAX_PARAM_DEPTH: usize = 8;

/// A parameter's name as a refusal names it: at most 64 characters.
fn truncated(name: &str) -> String {
    match name.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &name[..at]),
        None => name.to_owned(),
    }
}

/// Puts one parameter into the JSON tree of [`params`], by its field's kind.
fn put(
    tree: &mut serde_json::Map<String, serde_json::Value>,
    message: &MessageDescriptor,
    name: &str,
    value: &str,
) -> Result<(), Error> {
    let (head, rest) = match name.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (name, None),
    };
    let field = field(message, head).ok_or_else(|| Error::invalid(truncated(name), "no such field in the request"))?;
    let key = field.json_name().to_owned();
    match (field.kind(), rest) {
        (Kind::Message(inner), Some(rest))
            if !field.is_list() && !field.is_map() && !is_scalar_message(&inner) && !is_json_value(&inner) =>
        {
            let entry = tree
                .entry(key)
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            let serde_json::Value::Object(sub) = entry else {
                return Err(Error::invalid(truncated(name), "given twice"));
            };
            put(sub, &inner, rest, value)
        }
        (_, Some(_)) => Err(Error::invalid(truncated(name), "no such field in the request")),
        (kind, None) => {
            if field.is_map() || matches!(&kind, Kind::Message(m) if !is_scalar_message(m)) {
                return Err(Error::invalid(truncated(name), "cannot be given as a query parameter"));
            }
            let json = match kind {
                Kind::Bool => match value {
                    "true" => serde_json::Value::Bool(true),
                    "false" => serde_json::Value::Bool(false),
                    _ => return Err(Error::invalid(truncated(name), "must be true or false")),
                },
                Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask" => {
                    serde_json::Value::String(camel_case_paths(value))
                }
                _ => serde_json::Value::String(value.to_owned()),
            };
            if field.is_list() {
                let entry = tree.entry(key).or_insert_with(|| serde_json::Value::Array(Vec::new()));
                if let serde_json::Value::Array(items) = entry {
                    items.push(json);
                }
            } else if tree.insert(key, json).is_some() {
                return Err(Error::invalid(truncated(name), "given twice"));
            }
            Ok(())
        }
    }
}

/// A field by its proto or its JSON name.
pub(crate) fn field(message: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    message
        .get_field_by_name(name)
        .or_else(|| message.get_field_by_json_name(name))
}

/// `Struct`, `Value` and `ListValue`: free-form JSON, which query
/// parameters do not reach into.
fn is_json_value(m: &MessageDescriptor) -> bool {
    m.full_name().starts_with("google.protobuf.") && matches!(m.name(), "Struct" | "Value" | "ListValue")
}

/// Well-known types written as one JSON string (a timestamp, a duration, a
/// field mask) or a wrapper of a scalar.
fn is_scalar_message(m: &MessageDescriptor) -> bool {
    matches!(
        m.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.StringValue"
            | "google.protobuf.BoolValue"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
    )
}

fn string_field(message: &DynamicMessage, name: &str) -> Option<(FieldDescriptor, String)> {
    let f = message.descriptor().get_field_by_name(name)?;
    let current = match message.get_field(&f).as_ref() {
        Value::String(s) => s.clone(),
        _ => return None,
    };
    Some((f, current))
}

/// `Idempotency-Key` is the `request_id`: a UUID, and the same one when
/// the body names one too.
fn set_request_id(message: &mut DynamicMessage, key: &str) -> Result<(), Error> {
    let Ok(key_id) = uuid::Uuid::parse_str(key.trim()) else {
        return Err(Error::invalid("Idempotency-Key", "must be a UUID"));
    };
    let Some((f, current)) = string_field(message, "request_id") else {
        return Ok(());
    };
    if !current.is_empty() && uuid::Uuid::parse_str(&current).ok() != Some(key_id) {
        return Err(Error::invalid(
            "Idempotency-Key",
            "differs from the body's requestId; send one of them, or the same",
        ));
    }
    message.set_field(&f, Value::String(key.trim().to_owned()));
    Ok(())
}

/// `If-Match` is the request's `etag`, and the same one when the body names
/// one too. A route whose request takes no etag refuses it rather than
/// ignore it.
fn set_etag(message: &mut DynamicMessage, route: &Route, tag: &str) -> Result<(), Error> {
    if let Some((f, current)) = string_field(message, "etag") {
        if !current.is_empty() && current != tag {
            return Err(Error::invalid(
                "If-Match",
                "differs from the body's etag; send one of them, or the same",
            ));
        }
        message.set_field(&f, Value::String(tag.to_owned()));
        return Ok(());
    }
    Err(Error::invalid(
        "If-Match",
        format!("{} takes no etag, so it cannot be made conditional", route.rpc.name()),
    ))
}

/// `Last-Event-ID` is where a stream resumes: a feed's `cursor`, or a
/// session's `after_seq`.
fn set_resume(message: &mut DynamicMessage, id: &str) -> Result<(), Error> {
    let desc = message.descriptor();
    if let Some(f) = desc.get_field_by_name("cursor") {
        message.set_field(&f, Value::String(id.to_owned()));
    } else if let Some(f) = desc.get_field_by_name("after_seq") {
        let seq = id
            .parse::<i64>()
            .map_err(|_| Error::invalid("Last-Event-ID", "must be the id of an event of this stream"))?;
        message.set_field(&f, Value::I64(seq));
    }
    Ok(())
}
