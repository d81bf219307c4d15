//! The one table from domain errors to gRPC statuses (SPEC §6). Every status
//! carries `google.rpc.ErrorInfo` (domain `mentorship.v1`, a reason from
//! [`Reason`]) and, where they fit, `BadRequest` or `PreconditionFailure`.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::{Error, error::Reason};

/// The `ErrorInfo.domain` of every error this service returns.
pub(crate) const ERROR_DOMAIN: &str = "mentorship.v1";

fn info(details: &mut ErrorDetails, reason: Reason, metadata: HashMap<String, String>) {
    details.set_error_info(reason.as_str(), ERROR_DOMAIN, metadata);
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let message = err.to_string();
        let mut details = ErrorDetails::new();
        let code = match err {
            Error::InvalidArgument(violations) => {
                info(&mut details, Reason::InvalidArgument, HashMap::new());
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description);
                }
                Code::InvalidArgument
            }
            Error::NotFound { resource, id } => {
                info(
                    &mut details,
                    resource.not_found_reason(),
                    HashMap::from([(format!("{}_id", resource.as_str()), id.clone())]),
                );
                details.set_resource_info(resource.as_str(), id, "", "not found");
                Code::NotFound
            }
            Error::FailedPrecondition {
                reason,
                subject,
                metadata,
                message,
            } => {
                info(
                    &mut details,
                    reason,
                    metadata.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                );
                details.add_precondition_failure_violation(reason.as_str(), subject, message);
                Code::FailedPrecondition
            }
            Error::EtagMismatch { kind, current } => {
                info(
                    &mut details,
                    Reason::EtagMismatch,
                    HashMap::from([
                        ("kind".to_owned(), kind.to_owned()),
                        ("current_etag".to_owned(), current),
                    ]),
                );
                Code::Aborted
            }
            Error::ResourceExhausted { reason, metadata, .. } => {
                info(
                    &mut details,
                    reason,
                    metadata.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                );
                Code::ResourceExhausted
            }
            Error::RateLimited {
                budget,
                per_second,
                burst,
                retry_after,
            } => {
                info(
                    &mut details,
                    Reason::RateLimited,
                    HashMap::from([
                        ("budget".to_owned(), budget.to_owned()),
                        ("per_second".to_owned(), per_second.to_string()),
                        ("burst".to_owned(), burst.to_string()),
                    ]),
                );
                details.set_retry_info(Some(retry_after));
                Code::ResourceExhausted
            }
            Error::Unauthenticated(_) => {
                info(&mut details, Reason::Unauthenticated, HashMap::new());
                Code::Unauthenticated
            }
            Error::PermissionDenied { reason, .. } => {
                info(&mut details, reason, HashMap::new());
                Code::PermissionDenied
            }
            Error::DeadlineExceeded(_) => {
                info(&mut details, Reason::DeadlineExceeded, HashMap::new());
                Code::DeadlineExceeded
            }
            Error::Overloaded { metadata, .. } => {
                info(
                    &mut details,
                    Reason::Overloaded,
                    metadata.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                );
                Code::Unavailable
            }
            Error::Aborted { reason, .. } => {
                info(&mut details, reason, HashMap::new());
                Code::Aborted
            }
            Error::Unavailable(_) => {
                info(&mut details, Reason::Unavailable, HashMap::new());
                Code::Unavailable
            }
            Error::CommitOutcomeUnknown => {
                info(&mut details, Reason::CommitOutcomeUnknown, HashMap::new());
                Code::Unavailable
            }
            Error::NoRoute(_) => {
                info(&mut details, Reason::RouteNotFound, HashMap::new());
                Code::NotFound
            }
            Error::Internal(err) => {
                // The full chain goes to the log (inside the call's span); the client learns nothing internal.
                tracing::error!(error = ?err, "internal error");
                info(&mut details, Reason::Internal, HashMap::new());
                return Status::with_error_details(Code::Internal, "internal error", details);
            }
        };
        Status::with_error_details(code, message, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::pb::ErrorReason;

    /// The proto enum clients switch on and the domain's reasons are the same set.
    #[test]
    fn every_reason_is_in_the_proto_enum_and_nothing_else_is() {
        for reason in Reason::ALL {
            let name = format!("ERROR_REASON_{}", reason.as_str());
            assert!(
                ErrorReason::from_str_name(&name).is_some(),
                "{name} is missing from the proto"
            );
        }
        let mut proto_values = 0;
        for value in 1..1000 {
            if let Ok(r) = ErrorReason::try_from(value) {
                proto_values += 1;
                let name = r.as_str_name().trim_start_matches("ERROR_REASON_");
                assert!(
                    Reason::ALL.iter().any(|d| d.as_str() == name),
                    "{name} is in the proto but never used"
                );
            }
        }
        assert_eq!(proto_values, Reason::ALL.len());
    }

    #[test]
    fn internal_errors_say_nothing_internal() {
        let status = Status::from(Error::Internal(anyhow::anyhow!("SELECT secret FROM sessions")));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
        assert_eq!(status.get_details_error_info().expect("info").reason, "INTERNAL");
        assert!(!String::from_utf8_lossy(status.details()).contains("SELECT"));
    }
}
