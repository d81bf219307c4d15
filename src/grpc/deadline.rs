//! Deadlines, and every call runs to the end once it has begun, whatever
//! the client does: [`Deadline`] runs the handlers in a task of their own
//! (hyper drops a call's future when its client goes away, which would stop
//! a unit of work at an arbitrary `.await`) and answers DEADLINE_EXCEEDED
//! when the call's deadline passes (the caller's `grpc-timeout` or the
//! server's, whichever is sooner). What it keeps true: a deadline ends the
//! wait, never the work; calls whose work runs are capped per replica; and
//! that work is itself bounded (the deadline plus the silence bound), so a
//! silent database connection holds no call slot for good.
//! docs/ARCHITECTURE.md ("Invariants") names the tests.

use std::{sync::Arc, time::Duration};

use tokio::sync::Semaphore;
use tower::Service;

use super::layer::{Answer, Around, AroundLayer};
use tracing::Instrument;

use crate::domain::Error;

/// The deadline of a call that sends no `grpc-timeout` (and the longest a
/// call may ask for).
pub(crate) const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// How much sooner than tonic's own `grpc-timeout` timer a call is answered.
const TONIC_MARGIN: Duration = Duration::from_millis(5);

/// Calls in flight on a replica at most, by default: answered or not,
/// running calls count until their work ends, so clients that give up
/// early (or reset their streams) cannot pile up work without bound.
pub(crate) const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Deadline {
    /// The server's deadline for every call.
    deadline: Duration,
    /// Calls whose work is running, answered or not.
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    /// The longest a call's work runs, answered or not.
    work_limit: Duration,
}

impl Deadline {
    /// `silent_connection`: how long a database connection may leave a
    /// statement unanswered before it is presumed silent.
    pub(crate) fn layer(
        deadline: Duration,
        max_in_flight: usize,
        silent_connection: Duration,
    ) -> AroundLayer<Deadline> {
        AroundLayer(Deadline {
            deadline,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            work_limit: deadline + silent_connection,
        })
    }
}

fn answer(err: Error) -> http::Response<tonic::body::Body> {
    tonic::Status::from(err).into_http()
}

/// A `grpc-timeout` header's value: up to 8 digits and a unit (H, M, S, m,
/// u, n), as the gRPC over HTTP/2 protocol says. None when malformed.
pub(crate) fn parse_grpc_timeout(raw: &str) -> Option<Duration> {
    if !raw.is_ascii() {
        return None;
    }
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl<B: Send + 'static> Around<B> for Deadline {
    fn around<S>(&self, mut inner: S, req: http::Request<B>) -> Answer<S::Error>
    where
        S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let asked = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let deadline = asked.map_or(self.deadline, |d| d.min(self.deadline));
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            let max = self.max_in_flight;
            return Box::pin(async move {
                Ok(answer(Error::Overloaded {
                    message: format!("this replica has {max} calls in flight, the most it takes; retry with backoff"),
                    metadata: vec![
                        ("limit", "calls_in_flight".to_owned()),
                        ("current", max.to_string()),
                        ("maximum", max.to_string()),
                    ],
                }))
            });
        };
        // tonic's server runs its own timer on `grpc-timeout`, outside every
        // layer, and answers CANCELLED when it fires; answering a little
        // sooner gives the caller the DEADLINE_EXCEEDED the protocol names.
        let answer_by = deadline.saturating_sub(TONIC_MARGIN);
        let call = inner.call(req);
        let work_limit = self.work_limit;
        let task = tokio::spawn(
            async move {
                // Pinned here, so that it is dropped only at the end, after
                // the pool has heard that work is dropped.
                let mut call = std::pin::pin!(call);
                let answered = match tokio::time::timeout(work_limit, &mut call).await {
                    Ok(answered) => answered,
                    Err(_) => {
                        crate::store::pool::check_releases_for_a_while();
                        crate::metrics::database_error("silent_connection");
                        tracing::warn!(
                            limit_ms = work_limit.as_millis() as u64,
                            "a call's work outlived its bound, waiting on the database; dropped it"
                        );
                        Ok(answer(Error::Unavailable(
                            "the database did not answer; retry with backoff and the same request_id".into(),
                        )))
                    }
                };
                drop(permit);
                answered
            }
            .in_current_span(),
        );
        Box::pin(async move {
            match tokio::time::timeout(answer_by, task).await {
                Ok(Ok(result)) => result,
                Ok(Err(err)) => Ok(answer(Error::Internal(
                    anyhow::Error::new(err).context("a call's task ended without an answer"),
                ))),
                // The task goes on: dropping its handle does not stop it.
                Err(_) => Ok(answer(Error::DeadlineExceeded(format!(
                    "the call ran past its deadline of {} ms; work already under way still completes, \
                     and a retry with the same request_id answers what happened",
                    deadline.as_millis()
                )))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_says() {
        assert_eq!(parse_grpc_timeout("1m"), Some(Duration::from_millis(1)));
        assert_eq!(parse_grpc_timeout("250u"), Some(Duration::from_micros(250)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "1x", "-1S", "1.5S", "S1", "1é", "é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
