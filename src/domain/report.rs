//! What a session's end records: a completion report or a failure, checked
//! and shaped as stored.

use super::Result;

/// Largest encoded report data or failure details.
pub(crate) const MAX_DETAILS_BYTES: usize = 64 * 1024;

/// A completion report as stored: a summary, an optional overall score from 0
/// to 100, and free-form data (at most 64 KiB encoded).
pub(crate) fn report(
    summary: String,
    overall_score: Option<i32>,
    data: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Value> {
    let mut v = super::Violations::new();
    if let Some(score) = overall_score
        && !(0..=100).contains(&score)
    {
        v.add("report.overall_score", "must be between 0 and 100");
    }
    v.check(super::input::json_object("report.data", &data, MAX_DETAILS_BYTES));
    v.finish()?;
    Ok(serde_json::json!({
        "summary": summary,
        "overall_score": overall_score,
        "data": data,
    }))
}

/// A failure as stored: the error message and details (at most 64 KiB encoded).
pub(crate) fn failure(
    error_message: &str,
    details: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Value> {
    super::input::json_object("details", &details, MAX_DETAILS_BYTES)?;
    Ok(serde_json::json!({ "error_message": error_message, "details": details }))
}
