//! Each SessionService request parsed, once, into what its use case takes:
//! every field violation reported at once (`Parse`).

use super::*;

/// An etag field: empty means "any version".
fn expected_etag(raw: &str) -> Option<String> {
    (!raw.is_empty()).then(|| raw.to_owned())
}

impl Parse for pb::CreateSessionRequest {
    type Parsed = NewSession;
    fn parse(&self) -> Result<NewSession> {
        let mut v = Violations::new();
        let mentee_id = v.check(input::id("mentee_id", &self.mentee_id));
        let listing_id = v.check(input::id("listing_id", &self.listing_id));
        let mentor_id = v.check(input::optional_id("mentor_id", &self.mentor_id));
        let overrides = match &self.config_mask {
            None => Some(None),
            Some(mask) => v
                .check(input::at_most("config_mask", mask.paths.len(), MAX_MASK_PATHS))
                .and_then(|()| {
                    v.check(convert::config_patch(
                        self.config.as_ref().unwrap_or(&pb::SessionConfig::default()),
                        &mask.paths,
                        "config",
                    ))
                })
                .map(|patch| Some((patch, mask.paths.clone()))),
        };
        let new = (|| {
            Some(NewSession {
                mentee_id: mentee_id?,
                listing_id: listing_id?,
                mentor_id: mentor_id?,
                template_id: (!self.template_id.is_empty()).then(|| self.template_id.clone()),
                overrides: overrides?,
            })
        })();
        v.into_result(new)
    }
}

impl Parse for pb::BatchGetSessionsRequest {
    type Parsed = Vec<uuid::Uuid>;
    fn parse(&self) -> Result<Vec<uuid::Uuid>> {
        input::batch_ids("session_ids", &self.session_ids)
    }
}

/// The most characters a session's notes hold.
pub(super) const MAX_NOTES_CHARS: usize = 10_000;

impl Parse for pb::UpdateSessionNotesRequest {
    type Parsed = NotesUpdate;
    fn parse(&self) -> Result<NotesUpdate> {
        let mut v = Violations::new();
        let session_id = v.check(input::id("session_id", &self.session_id));
        let paths = self.update_mask.as_ref().map(|m| m.paths.clone()).unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "must name notes, metadata or both");
        }
        v.check(input::at_most("update_mask", paths.len(), MAX_MASK_PATHS));
        for path in paths.iter().take(MAX_MASK_PATHS) {
            if path != "notes" && path != "metadata" {
                v.add(
                    "update_mask",
                    format!(
                        "{:?} is not a field UpdateSessionNotes changes (notes, metadata)",
                        input::truncate(path)
                    ),
                );
            }
        }
        let named = |p: &str| paths.iter().any(|x| x == p);
        let notes = if named("notes") {
            v.check(input::optional_text("notes", &self.notes, MAX_NOTES_CHARS))
                .map(Some)
        } else {
            Some(None)
        };
        let metadata = if named("metadata") {
            let map = convert::struct_to_map(self.metadata.as_ref());
            v.check(input::json_object("metadata", &map, report::MAX_DETAILS_BYTES))
                .map(|()| Some(serde_json::Value::Object(map)))
        } else {
            Some(None)
        };
        let u = (|| {
            Some(NotesUpdate {
                session_id: session_id?,
                notes: notes?,
                metadata: metadata?,
                etag: expected_etag(&self.etag),
            })
        })();
        v.into_result(u)
    }
}

impl Parse for pb::GetSessionRequest {
    type Parsed = uuid::Uuid;
    fn parse(&self) -> Result<uuid::Uuid> {
        input::id("session_id", &self.session_id)
    }
}

impl Parse for pb::GetSessionTimelineRequest {
    type Parsed = uuid::Uuid;
    fn parse(&self) -> Result<uuid::Uuid> {
        input::id("session_id", &self.session_id)
    }
}

impl Parse for pb::CompareSessionsRequest {
    type Parsed = (uuid::Uuid, uuid::Uuid);
    fn parse(&self) -> Result<(uuid::Uuid, uuid::Uuid)> {
        let mut v = Violations::new();
        let first = v.check(input::id("first_session_id", &self.first_session_id));
        let second = v.check(input::id("second_session_id", &self.second_session_id));
        v.into_result(first.zip(second))
    }
}

impl Parse for pb::GetSessionConfigRequest {
    type Parsed = uuid::Uuid;
    fn parse(&self) -> Result<uuid::Uuid> {
        input::id("session_id", &self.session_id)
    }
}

impl Parse for pb::ReassignMentorRequest {
    type Parsed = Reassignment;
    fn parse(&self) -> Result<Reassignment> {
        let mut v = Violations::new();
        let session_id = v.check(input::id("session_id", &self.session_id));
        let mentor_id = v.check(input::id("mentor_id", &self.mentor_id));
        let reason = v.check(input::required_text("reason", &self.reason, MAX_TEXT_LEN));
        let r = (|| {
            Some(Reassignment {
                session_id: session_id?,
                mentor_id: mentor_id?,
                reason: reason?,
                etag: expected_etag(&self.etag),
            })
        })();
        v.into_result(r)
    }
}

impl Parse for pb::ListMentorAssignmentsRequest {
    type Parsed = LogQuery;
    fn parse(&self) -> Result<LogQuery> {
        convert::log_query("session_id", &self.session_id, self.page_size, &self.page_token)
    }
}

impl Parse for pb::GetQueueStatusRequest {
    type Parsed = ();
    fn parse(&self) -> Result<()> {
        Ok(())
    }
}

impl Parse for pb::ListConfigTemplatesRequest {
    type Parsed = ();
    fn parse(&self) -> Result<()> {
        Ok(())
    }
}

/// The filter fields ListSessions and ExportSessions share.
struct SessionFilterFields<'a> {
    mentee_id: &'a str,
    mentor_id: &'a str,
    listing_id: &'a str,
    statuses: &'a [i32],
    start_time_from: Option<&'a prost_types::Timestamp>,
    start_time_to: Option<&'a prost_types::Timestamp>,
}

impl SessionFilterFields<'_> {
    /// The filter in the order `order` parses (after the fields, so
    /// violations are listed in field order); every problem is added to `v`.
    fn parse(
        &self,
        order: impl FnOnce(&mut Violations) -> Option<(SortField, bool)>,
        v: &mut Violations,
    ) -> Option<ListFilter> {
        let mentee_id = v.check(input::optional_id("mentee_id", self.mentee_id));
        let mentor_id = v.check(input::optional_id("mentor_id", self.mentor_id));
        let listing_id = v.check(input::optional_id("listing_id", self.listing_id));
        let statuses = v.check(convert::session_statuses("statuses", self.statuses));
        let start_from = v.check(convert::opt_time("start_time_from", self.start_time_from));
        let start_to = v.check(convert::opt_time("start_time_to", self.start_time_to));
        let (sort, descending) = order(v)?;
        Some(ListFilter {
            participants: ParticipantFilter {
                mentee_id: mentee_id?,
                mentor_id: mentor_id?,
                listing_id: listing_id?,
                statuses: statuses?,
            },
            start_from: start_from?,
            start_to: start_to?,
            sort,
            descending,
        })
    }
}

impl Parse for pb::ListSessionsRequest {
    type Parsed = SessionQuery;
    fn parse(&self) -> Result<SessionQuery> {
        let mut v = Violations::new();
        let page = v.check(convert::page(self.page_size, &self.page_token));
        let filter = SessionFilterFields {
            mentee_id: &self.mentee_id,
            mentor_id: &self.mentor_id,
            listing_id: &self.listing_id,
            statuses: &self.statuses,
            start_time_from: self.start_time_from.as_ref(),
            start_time_to: self.start_time_to.as_ref(),
        }
        .parse(|v| v.check(convert::order_by(&self.order_by)), &mut v);
        let query = (|| {
            Some(SessionQuery {
                filter: filter?,
                page: page?,
                with_total: self.include_total_size,
            })
        })();
        v.into_result(query)
    }
}

impl Parse for pb::ExportSessionsRequest {
    type Parsed = ExportQuery;
    fn parse(&self) -> Result<ExportQuery> {
        let mut v = Violations::new();
        let filter = SessionFilterFields {
            mentee_id: &self.mentee_id,
            mentor_id: &self.mentor_id,
            listing_id: &self.listing_id,
            statuses: &self.statuses,
            start_time_from: self.start_time_from.as_ref(),
            start_time_to: self.start_time_to.as_ref(),
        }
        .parse(|_| Some((SortField::CreatedAt, false)), &mut v);
        let format = match pb::ExportFormat::try_from(self.format) {
            Ok(pb::ExportFormat::Unspecified) => Some(None),
            Ok(pb::ExportFormat::Csv) => Some(Some(ExportFormat::Csv)),
            Ok(pb::ExportFormat::JsonLines) => Some(Some(ExportFormat::JsonLines)),
            Err(_) => {
                v.add("format", format!("{} is not an export format", self.format));
                None
            }
        };
        let query = (|| {
            Some(ExportQuery {
                filter: filter?,
                format: format?,
            })
        })();
        v.into_result(query)
    }
}

/// A session id and the other fields of a session command.
fn parse_command(session_id: &str, command: Command, etag_raw: &str, v: &mut Violations) -> Option<Transition> {
    let id = v.check(input::id("session_id", session_id))?;
    Some(Transition {
        etag: expected_etag(etag_raw),
        ..Transition::new(id, command)
    })
}

impl Parse for pb::StartSessionRequest {
    type Parsed = Transition;
    fn parse(&self) -> Result<Transition> {
        let mut v = Violations::new();
        let t = parse_command(&self.session_id, Command::Start, &self.etag, &mut v);
        v.into_result(t)
    }
}

impl Parse for pb::ResumeSessionRequest {
    type Parsed = Transition;
    fn parse(&self) -> Result<Transition> {
        let mut v = Violations::new();
        let t = parse_command(&self.session_id, Command::Resume, &self.etag, &mut v);
        v.into_result(t)
    }
}

impl Parse for pb::PauseSessionRequest {
    type Parsed = Transition;
    fn parse(&self) -> Result<Transition> {
        let mut v = Violations::new();
        let t = parse_command(&self.session_id, Command::Pause, &self.etag, &mut v);
        let reason = v.check(input::optional_text("reason", &self.reason, MAX_TEXT_LEN));
        v.into_result((|| Some(Transition { reason: reason?, ..t? }))())
    }
}

impl Parse for pb::CompleteSessionRequest {
    type Parsed = Transition;
    fn parse(&self) -> Result<Transition> {
        let mut v = Violations::new();
        let t = parse_command(&self.session_id, Command::Complete, &self.etag, &mut v);
        let report = match &self.report {
            None => Some(None),
            Some(r) => {
                // The summary and the rest are checked apart, so every problem is reported.
                let summary = v.check(input::optional_text("report.summary", &r.summary, MAX_TEXT_LEN));
                let report = v.check(report::report(
                    summary.clone().unwrap_or_default(),
                    r.overall_score,
                    convert::struct_to_map(r.data.as_ref()),
                ));
                summary.and(report).map(Some)
            }
        };
        v.into_result((|| Some(Transition { report: report?, ..t? }))())
    }
}

impl Parse for pb::FailSessionRequest {
    type Parsed = Transition;
    fn parse(&self) -> Result<Transition> {
        let mut v = Violations::new();
        let t = parse_command(&self.session_id, Command::Fail, &self.etag, &mut v);
        let message = v.check(input::required_text("error_message", &self.error_message, MAX_TEXT_LEN));
        let failure = v.check(report::failure(
            message.as_deref().unwrap_or_default(),
            convert::struct_to_map(self.details.as_ref()),
        ));
        v.into_result((|| {
            Some(Transition {
                failure: Some(failure?),
                reason: message?,
                ..t?
            })
        })())
    }
}

impl Parse for pb::CancelSessionRequest {
    type Parsed = Transition;
    fn parse(&self) -> Result<Transition> {
        let mut v = Violations::new();
        let t = parse_command(&self.session_id, Command::Cancel, &self.etag, &mut v);
        let reason = v.check(input::required_text("reason", &self.reason, MAX_TEXT_LEN));
        v.into_result((|| Some(Transition { reason: reason?, ..t? }))())
    }
}

impl Parse for pb::AdvanceStageRequest {
    type Parsed = StageChange;
    fn parse(&self) -> Result<StageChange> {
        let mut v = Violations::new();
        let session_id = v.check(input::id("session_id", &self.session_id));
        let stage = v.check(input::label("stage", &self.stage));
        let change = (|| {
            Some(StageChange {
                session_id: session_id?,
                stage: stage?,
                etag: expected_etag(&self.etag),
            })
        })();
        v.into_result(change)
    }
}

impl Parse for pb::RecordCheckInRequest {
    type Parsed = CheckIn;
    fn parse(&self) -> Result<CheckIn> {
        let mut v = Violations::new();
        let session_id = v.check(input::id("session_id", &self.session_id));
        let note = v.check(input::optional_text("note", &self.note, CheckIn::MAX_NOTE));
        let check_in = (|| {
            Some(CheckIn {
                session_id: session_id?,
                note: note?,
                blocker: self.blocker,
                etag: expected_etag(&self.etag),
            })
        })();
        v.into_result(check_in)
    }
}

impl Parse for pb::ListSessionEventsRequest {
    type Parsed = LogQuery;
    fn parse(&self) -> Result<LogQuery> {
        convert::log_query("session_id", &self.session_id, self.page_size, &self.page_token)
    }
}

impl Parse for pb::UpdateSessionConfigRequest {
    type Parsed = ConfigUpdate;
    fn parse(&self) -> Result<ConfigUpdate> {
        let mut v = Violations::new();
        let session_id = v.check(input::id("session_id", &self.session_id));
        let paths = self
            .update_mask
            .as_ref()
            .map(|m| m.paths.as_slice())
            .unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "must name at least one field");
        }
        let patch = v
            .check(input::at_most("update_mask", paths.len(), MAX_MASK_PATHS))
            .and_then(|()| {
                v.check(convert::config_patch(
                    self.config.as_ref().unwrap_or(&pb::SessionConfig::default()),
                    paths,
                    "config",
                ))
            });
        let update = (|| {
            Some(ConfigUpdate {
                session_id: session_id?,
                patch: patch?,
                paths: paths.to_vec(),
                etag: expected_etag(&self.etag),
            })
        })();
        v.into_result(update)
    }
}

impl Parse for pb::WatchSessionRequest {
    type Parsed = SessionWatch;
    fn parse(&self) -> Result<SessionWatch> {
        let mut v = Violations::new();
        let session_id = v.check(input::id("session_id", &self.session_id));
        if self.after_seq.is_some_and(|s| s < 0) {
            v.add("after_seq", "must not be negative");
        }
        let watch = (|| {
            Some(SessionWatch {
                session_id: session_id?,
                after_seq: self.after_seq,
            })
        })();
        v.into_result(watch)
    }
}

impl Parse for pb::WatchSessionsRequest {
    type Parsed = FeedWatch;
    fn parse(&self) -> Result<FeedWatch> {
        let mut v = Violations::new();
        let mentor_id = v.check(input::optional_id("mentor_id", &self.mentor_id));
        let mentee_id = v.check(input::optional_id("mentee_id", &self.mentee_id));
        let listing_id = v.check(input::optional_id("listing_id", &self.listing_id));
        let statuses = v.check(convert::session_statuses("statuses", &self.statuses));
        let cursor = if self.cursor.is_empty() {
            Some(None)
        } else {
            v.check(decode_cursor(&self.cursor)).map(Some)
        };
        let watch = (|| {
            Some(FeedWatch {
                filter: ParticipantFilter {
                    mentor_id: mentor_id?,
                    mentee_id: mentee_id?,
                    listing_id: listing_id?,
                    statuses: statuses?,
                },
                cursor: cursor?,
                send_start_position: self.send_start_position,
            })
        })();
        v.into_result(watch)
    }
}
