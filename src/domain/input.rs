//! Parsing of raw request values into checked domain values. Every check
//! reports the offending field so the caller gets a precise `BadRequest`.

use uuid::Uuid;

use super::{Error, Result};

/// Longest accepted display name, title or skill area.
pub const MAX_NAME_LEN: usize = 200;
/// Longest accepted free text (notes, reasons, summaries).
pub const MAX_TEXT_LEN: usize = 4000;

/// A required UUID.
pub fn id(field: &str, raw: &str) -> Result<Uuid> {
    if raw.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    optional_id(field, raw)?.ok_or_else(|| Error::invalid(field, "is required"))
}

/// A UUID that may be left empty.
pub fn optional_id(field: &str, raw: &str) -> Result<Option<Uuid>> {
    if raw.is_empty() {
        return Ok(None);
    }
    Uuid::try_parse(raw)
        .map(Some)
        .map_err(|_| Error::invalid(field, format!("must be a UUID, got {:?}", truncate(raw))))
}

/// Required text, trimmed, at most `max` characters.
pub fn required_text(field: &str, raw: &str, max: usize) -> Result<String> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    optional_text(field, text, max)
}

/// Optional text, trimmed, at most `max` characters.
pub fn optional_text(field: &str, raw: &str, max: usize) -> Result<String> {
    let text = raw.trim();
    let len = text.chars().count();
    if len > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} characters, got {len}"),
        ));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(text.to_owned())
}

/// A label such as a skill area or stage: `[a-z0-9_.-]{1,64}`.
pub fn label(field: &str, raw: &str) -> Result<String> {
    let ok = (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(Error::invalid(
            field,
            format!("must match [a-z0-9_.-]{{1,64}}, got {:?}", truncate(raw)),
        ))
    }
}

/// Most rows one page holds.
pub const MAX_PAGE_SIZE: i32 = 100;

/// Page size: 0 means the default of 20; more than 100 is read as 100
/// (AIP-158: the server caps the size rather than refuse it). A negative
/// size is refused.
pub fn page_size(raw: i32) -> Result<i64> {
    match raw {
        0 => Ok(20),
        1.. => Ok(i64::from(raw.min(MAX_PAGE_SIZE))),
        _ => Err(Error::invalid("page_size", "must not be negative")),
    }
}

/// Most ids one batch read takes (AIP-231).
pub const MAX_BATCH: usize = 100;

/// The ids of a batch read: 1 to [`MAX_BATCH`] UUIDs, each named by its
/// index when malformed.
pub fn batch_ids(field: &str, raw: &[String]) -> Result<Vec<Uuid>> {
    if raw.is_empty() {
        return Err(Error::invalid(field, "is required: 1 to 100 ids"));
    }
    at_most(field, raw.len(), MAX_BATCH)?;
    let mut v = super::Violations::new();
    let ids: Vec<Option<Uuid>> = raw
        .iter()
        .enumerate()
        .map(|(i, id)| v.check(self::id(&format!("{field}[{i}]"), id)))
        .collect();
    v.into_result(ids.into_iter().collect())
}

/// A repeated field's length, checked before anything looks at its
/// elements: the work spent on a request stays bounded by its limits, not
/// by what a caller sends.
pub fn at_most(field: &str, len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(Error::invalid(field, format!("at most {max} entries, got {len}")));
    }
    Ok(())
}

/// Deepest nesting of objects and arrays in a Struct a request may carry
/// (the Struct itself is level 1). Every level of objects is three protobuf
/// messages deep on the wire (Struct, its map entry, Value), so 16 levels
/// plus the messages around them (a ListSessionsResponse, its Session, the
/// config) stay near 55, well under the recursion limit of 100 in prost and
/// upb (Python) and far under Go's 10,000: whatever is stored and served
/// decodes in every standard client.
pub const MAX_NESTING: usize = 16;

/// A JSON object (a `google.protobuf.Struct` on the wire) of at most
/// `max_bytes` when encoded as JSON and at most [`MAX_NESTING`] levels
/// deep, with no NUL character in any key or string (PostgreSQL's `jsonb`
/// cannot store one).
pub fn json_object(field: &str, value: &serde_json::Map<String, serde_json::Value>, max_bytes: usize) -> Result<()> {
    let depth = object_depth(value);
    if depth > MAX_NESTING {
        return Err(Error::invalid(
            field,
            format!("must nest objects and lists at most {MAX_NESTING} levels deep, got {depth}"),
        ));
    }
    let size = serde_json::to_vec(value).map(|b| b.len()).unwrap_or(usize::MAX);
    if size > max_bytes {
        return Err(Error::invalid(
            field,
            format!("must be at most {} KiB encoded, got {size} bytes", max_bytes / 1024),
        ));
    }
    if let Some(path) = nul_in_object(value) {
        return Err(Error::invalid(
            field,
            format!("must not contain NUL characters, found one at {path:?}"),
        ));
    }
    Ok(())
}

/// Where the first NUL character is in an object's keys or strings, as a
/// path of keys and indexes (`a.b[2]`).
fn nul_in_object(object: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    object.iter().find_map(|(key, value)| {
        let at = || truncate(key);
        if key.contains('\0') {
            return Some(at());
        }
        nul_in(value).map(|rest| format!("{}{rest}", at()))
    })
}

/// How many levels of objects and arrays `object` nests, itself included.
pub fn object_depth(object: &serde_json::Map<String, serde_json::Value>) -> usize {
    1 + object.values().map(depth).max().unwrap_or(0)
}

fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => object_depth(o),
        _ => 0,
    }
}

fn nul_in(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => Some(String::new()),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_in(item).map(|rest| format!("[{i}]{rest}"))),
        serde_json::Value::Object(o) => nul_in_object(o).map(|path| format!(".{path}")),
        _ => None,
    }
}

/// The first 64 characters of raw input, for error messages.
pub fn truncate(raw: &str) -> String {
    raw.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_past_the_maximum_are_capped_and_negative_ones_refused() {
        assert_eq!(page_size(0).unwrap(), 20);
        assert_eq!(page_size(7).unwrap(), 7);
        assert_eq!(page_size(100).unwrap(), 100);
        assert_eq!(page_size(1000).unwrap(), 100);
        assert_eq!(page_size(i32::MAX).unwrap(), 100);
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn ids_must_be_uuids() {
        assert!(id("x", "").is_err());
        assert!(id("x", "not-a-uuid").is_err());
        assert!(id("x", "0191d3a4-7c1e-7000-8000-000000000001").is_ok());
        assert_eq!(optional_id("x", "").unwrap(), None);
    }

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(required_text("x", "  hi ", 10).unwrap(), "hi");
        assert!(required_text("x", "   ", 10).is_err());
        assert!(optional_text("x", &"a".repeat(11), 10).is_err());
        assert!(optional_text("x", "bad\u{0}", 10).is_err());
    }

    #[test]
    fn lists_are_capped_by_length() {
        assert!(at_most("xs", 50, 50).is_ok());
        let err = at_most("xs", 500_000, 50).unwrap_err();
        assert!(err.to_string().contains("at most 50 entries, got 500000"), "{err}");
    }

    #[test]
    fn json_objects_are_capped_by_encoded_size() {
        let mut map = serde_json::Map::new();
        map.insert("k".into(), serde_json::Value::String("v".repeat(100)));
        assert!(json_object("data", &map, 1024).is_ok());
        assert!(json_object("data", &map, 64).is_err());
    }

    #[test]
    fn json_objects_hold_no_nul_and_the_error_names_where() {
        let map = serde_json::json!({"a": {"b": ["ok", "x\u{0}"]}, "c": 1});
        let map = map.as_object().unwrap();
        let err = json_object("data", map, 1024).unwrap_err();
        assert!(err.to_string().contains(r#"found one at "a.b[1]""#), "{err}");
        let key = serde_json::json!({"k\u{0}": 1});
        assert!(json_object("data", key.as_object().unwrap(), 1024).is_err());
        let fine = serde_json::json!({"a": ["\n", {"b": null}]});
        assert!(json_object("data", fine.as_object().unwrap(), 1024).is_ok());
    }

    /// `{"a": [{"a": [...]}]}`: an object `levels` deep, counting lists.
    fn nested(levels: usize) -> serde_json::Map<String, serde_json::Value> {
        let mut value = serde_json::json!(1);
        for level in (2..=levels).rev() {
            value = if level % 2 == 0 {
                serde_json::json!([value])
            } else {
                serde_json::json!({ "a": value })
            };
        }
        serde_json::json!({ "a": value }).as_object().unwrap().clone()
    }

    #[test]
    fn json_objects_are_capped_by_nesting() {
        assert_eq!(object_depth(&serde_json::Map::new()), 1);
        assert_eq!(object_depth(&nested(3)), 3);
        assert!(json_object("data", &nested(MAX_NESTING), 1 << 20).is_ok());
        let err = json_object("data", &nested(MAX_NESTING + 1), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("at most 16 levels deep, got 17"), "{err}");
    }

    #[test]
    fn labels_follow_the_pattern() {
        assert!(label("s", "review.step-2_a").is_ok());
        assert!(label("s", "Review").is_err());
        assert!(label("s", "").is_err());
        assert!(label("s", &"a".repeat(65)).is_err());
    }
}
