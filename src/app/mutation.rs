//! A mutation's life, whatever edge it came in by: a unit of work is opened,
//! the caller's `request_id` claimed in it (a retry gets the first response
//! and changes nothing), the use case run, its response remembered with the
//! change, and all of it committed together.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::App;
use crate::domain::{Error, Result, access::Principal};
use crate::store::idempotency::{self, Claim};
use crate::store::unit::Unit;

/// Who asks for a change, and what makes a retry the same request.
pub struct Mutation<'a> {
    pub who: &'a Principal,
    /// The RPC's full name (`/mentorship.v1.SessionService/PauseSession`).
    pub method: &'a str,
    /// The caller's `request_id`, if it sent one.
    pub request_id: Option<Uuid>,
    /// The request's encoding with its `request_id` in one canonical form:
    /// a retry must send the same (empty without a `request_id`).
    pub body: Vec<u8>,
}

/// How a mutation begins: a replay of a remembered response (with the unit
/// of work the replay's access check runs in), or a fresh unit of work to
/// make the change in.
enum Begun<R> {
    Replay(Unit, R),
    Fresh(Unit, Option<Uuid>),
}

impl App {
    /// Runs `run` as the mutation `m` (see the module documentation).
    /// `remember` writes the response kept for retries (without what must
    /// not be kept, a secret say), `recall` reads a kept one back.
    pub async fn mutate<P, R>(
        &self,
        m: Mutation<'_>,
        parsed: P,
        run: impl AsyncFnOnce(&App, &mut Unit, &Principal, P) -> Result<R>,
        remember: impl FnOnce(&R) -> Vec<u8>,
        recall: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        let who = m.who;
        let (mut unit, key) = match self.begin(&m, recall).await? {
            Begun::Replay(mut unit, response) => {
                // A remembered response goes only to a caller who may make
                // this call now (the same request_id may come back with
                // other roles or another mentor claim under the same `sub`):
                // the use case runs again as a fresh call would, in a
                // transaction that is rolled back, and an access error it
                // meets is the answer. Any other outcome (done, or refused
                // because the first call already changed the state) gets
                // the first response. So no mutation may take away its own
                // caller's access, or its retry would be refused; none
                // does (only coordinators and services reassign, and they
                // act on every session).
                let rerun = run(self, &mut unit, who, parsed).await;
                drop(unit);
                return match rerun {
                    Err(err @ (Error::PermissionDenied { .. } | Error::Unauthenticated(_))) => Err(err),
                    _ => Ok(response),
                };
            }
            Begun::Fresh(unit, key) => (unit, key),
        };
        let response = run(self, &mut unit, who, parsed).await?;
        if let Some(key) = key {
            idempotency::remember(unit.tx(), key, &remember(&response)).await?;
        }
        self.commit(unit).await?;
        Ok(response)
    }

    /// Opens the unit of work of a mutation and claims its `request_id`.
    async fn begin<R>(&self, m: &Mutation<'_>, recall: impl FnOnce(&[u8]) -> Result<R>) -> Result<Begun<R>> {
        let mut unit = self.unit().await?;
        self.check_mentor_identity(m.who, Some(&mut unit)).await?;
        let Some(key) = m.request_id else {
            return Ok(Begun::Fresh(unit, None));
        };
        tracing::Span::current().record("request_id", tracing::field::display(key));
        // The same id is the same request only from the same caller, for the
        // same RPC, with the same body; ids are compared as UUIDs, whatever
        // their case.
        let mut hasher = Sha256::new();
        hasher.update(m.method.as_bytes());
        hasher.update(m.who.user_id.as_bytes());
        hasher.update(&m.body);
        // A request id belongs to its caller: it is stored under a key derived
        // from both, so two callers' ids never meet, and neither learns of the other's.
        let key = Uuid::new_v5(&m.who.user_id, key.as_bytes());
        let fingerprint = hasher.finalize().to_vec();
        match idempotency::claim(unit.tx(), key, &fingerprint).await? {
            Claim::Fresh => Ok(Begun::Fresh(unit, Some(key))),
            Claim::Seen { fingerprint: first, .. } if first != fingerprint => Err(Error::invalid(
                "request_id",
                "was already used for a different request; use a new request_id",
            )),
            Claim::Seen { response, .. } => recall(response.as_slice()).map(|response| Begun::Replay(unit, response)),
        }
    }
}
