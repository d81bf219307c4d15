//! Fires system timeouts (SPEC §4.1): max duration, pause timeout and no-show;
//! and missed check-ins with their escalation (SPEC §4.6).
//!
//! Deadlines are stored with the session (`sessions.deadline`, and
//! `sessions.check_in_due` for check-ins), so a restart loses none. Every replica runs a sweeper; `FOR UPDATE SKIP LOCKED` hands
//! each due session to exactly one of them, and the transition re-checks the
//! session's state under that lock, so a timeout fires once.

use std::{collections::HashMap, time::Duration};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::domain::{
    Error, Result,
    command::Transition,
    session::{Command, Requester},
};
use crate::store::{Span, deadlines, idempotency};
use uuid::Uuid;

/// The longest the sweeper sleeps: a deadline set behind the service's back
/// (or announced by no replica) is still picked up within a second.
const MAX_NAP: Duration = Duration::from_secs(1);

/// The shortest nap once a change commits anywhere (a change may arm an
/// earlier deadline or free a slot for the queue): a busy service sweeps at
/// most this often, an idle one once per [`MAX_NAP`].
const MIN_NAP: Duration = Duration::from_millis(250);

/// The kind of a check-in that came due (the other kinds are the system
/// timeouts' `deadline_kind`).
const CHECK_IN: &str = "CHECK_IN";

/// How often old request ids are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Fires every timeout and missed check-in that is due now; returns how many fired. A session
/// whose timeout fails (corrupt data, say) is logged and skipped for this
/// pass, so it never holds back the others.
pub async fn sweep_once(app: &App) -> Result<usize> {
    Ok(sweep(app, &[]).await?.fired)
}

/// What one pass did.
#[derive(Debug, Default)]
struct Pass {
    fired: usize,
    /// Sessions whose timeout failed in this pass.
    failed: Vec<Uuid>,
}

/// One pass, skipping the sessions in `skip` (ones backing off).
async fn sweep(app: &App, skip: &[Uuid]) -> Result<Pass> {
    let mut pass = Pass::default();
    let mut skipped = skip.to_vec();
    loop {
        let mut unit = app.unit().await?;
        // Timeouts first: a session whose time is up is not also asked for a check-in.
        let (id, kind) = match deadlines::lock_due(unit.tx(), &skipped).await? {
            Some(due) => due,
            None => match deadlines::lock_due_check_in(unit.tx(), &skipped).await? {
                Some(id) => (id, CHECK_IN.to_owned()),
                None => return Ok(pass),
            },
        };
        let fired = if kind == CHECK_IN {
            app.miss_check_in(&mut unit, id).await
        } else {
            let timeout = Transition {
                reason: kind.clone(),
                ..Transition::new(id, Command::Timeout)
            };
            app.transition(&mut unit, Requester::System, timeout).await.map(drop)
        };
        let outcome = match fired {
            Ok(()) => app.commit(unit).await,
            Err(err) => Err(err),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(session_id = %id, reason = %kind, "system deadline fired");
                pass.fired += 1;
            }
            // A conflict or an outage: the next pass tries again.
            Err(
                err @ (Error::Aborted { .. }
                | Error::Unavailable(_)
                | Error::CommitOutcomeUnknown
                | Error::EtagMismatch { .. }),
            ) => {
                tracing::warn!(session_id = %id, reason = %kind, error = %err, "system deadline deferred; retrying next pass");
                skipped.push(id);
            }
            Err(err) => {
                tracing::error!(session_id = %id, reason = %kind, error = %err, "system deadline failed; backing off from it");
                skipped.push(id);
                pass.failed.push(id);
            }
        }
    }
}

/// Sessions whose timeout failed, each skipped until its own retry time,
/// which doubles with every failure (up to [`MAX_FAILED_BACKOFF`]).
#[derive(Debug, Default)]
struct Failing(HashMap<Uuid, (u32, tokio::time::Instant)>);

impl Failing {
    /// The sessions to skip now.
    fn skip(&self) -> Vec<Uuid> {
        let now = tokio::time::Instant::now();
        self.0
            .iter()
            .filter(|(_, (_, at))| *at > now)
            .map(|(id, _)| *id)
            .collect()
    }

    fn record(&mut self, pass: &Pass, skipped: &[Uuid]) {
        let now = tokio::time::Instant::now();
        // Tried again and not failing: it fired, or is no longer due.
        self.0.retain(|id, _| skipped.contains(id) || pass.failed.contains(id));
        for id in &pass.failed {
            let failures = self.0.get(id).map_or(1, |(n, _)| n + 1);
            let wait = MAX_NAP.saturating_mul(1 << failures.min(16)).min(MAX_FAILED_BACKOFF);
            self.0.insert(*id, (failures, now + wait));
        }
    }
}

/// The longest a session whose timeout keeps failing waits between tries.
const MAX_FAILED_BACKOFF: Duration = Duration::from_secs(300);

/// The first nap after a pass that fired nothing while a deadline is due
/// (it is locked elsewhere, or failing); it doubles up to [`MAX_NAP`].
const FIRST_STALL_NAP: Duration = Duration::from_millis(50);

/// Runs until `shutdown`: sleeps until the next deadline (at most
/// [`MAX_NAP`]; at least [`MIN_NAP`] once this replica commits something), then sweeps.
pub async fn run(app: App, shutdown: CancellationToken) {
    let mut last_purge = tokio::time::Instant::now();
    let mut changes = app.hub.subscribe_committed();
    let mut failing = Failing::default();
    let mut stall_nap: Option<Duration> = None;
    while !shutdown.is_cancelled() {
        let pass_started = tokio::time::Instant::now();
        // A task per pass: even a panic cannot stop the sweeper for good.
        let (pass_app, skip) = (app.clone(), failing.skip());
        let skipped = skip.clone();
        // A pass fires one deadline per transaction, each committed as it
        // goes; one that has not ended after three times the silence bound
        // waits on a silent connection, and the next pass goes on.
        let bound = app.rules.silent_connection * 3;
        let fired = match tokio::spawn(async move {
            crate::store::bounded(&pass_app.waits, Span::Long, bound, sweep(&pass_app, &skip)).await
        })
        .await
        {
            Ok(Ok(pass)) => {
                failing.record(&pass, &skipped);
                pass.fired
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "sweep failed; retrying");
                0
            }
            Err(err) => {
                tracing::error!(error = %err, "sweep panicked; retrying");
                0
            }
        };
        // The backstop of promotion: a release that raced with a session
        // joining the queue leaves it waiting no longer than one pass.
        if let Err(err) = crate::store::bounded(
            &app.waits,
            Span::Short,
            app.rules.silent_connection,
            app.promote_waiting(),
        )
        .await
        {
            tracing::warn!(error = %err, "promotion pass failed; retrying");
        }
        if last_purge.elapsed() > PURGE_EVERY {
            last_purge = tokio::time::Instant::now();
            if let Err(err) = idempotency::purge(&app.pool, app.rules.idempotency_retention_hours).await {
                tracing::warn!(error = %err, "purging request ids failed");
            }
        }
        let skip = failing.skip();
        let next = deadlines::next_deadline(&app.pool, &skip).await;
        // The lag counts the sessions backing off too: a timeout that keeps
        // failing is a deadline the sweeper is behind on.
        let oldest = if skip.is_empty() {
            next.as_ref().ok().copied()
        } else {
            deadlines::next_deadline(&app.pool, &[]).await.ok()
        };
        if let Some(at) = oldest {
            app.metrics.set_sweeper_next(at);
        }
        let nap = match &next {
            Ok(Some(at)) => (*at - Utc::now()).to_std().unwrap_or_default().min(MAX_NAP),
            _ => MAX_NAP,
        };
        // Something due that this pass left alone (locked by another
        // transaction, or failing): back off instead of spinning, until a
        // pass makes progress or nothing is due.
        let stalled = fired == 0 && nap.is_zero() && matches!(next, Ok(Some(_)));
        let nap = if stalled {
            *stall_nap.insert(stall_nap.map_or(FIRST_STALL_NAP, |nap| nap.saturating_mul(2).min(MAX_NAP)))
        } else {
            stall_nap = None;
            nap
        };
        let due = tokio::time::sleep(nap);
        tokio::pin!(due);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = &mut due => {}
            // Anything committed here: look again soon, but not before MIN_NAP
            // or the next deadline (each replica's sweeper wakes on its own
            // commits; deadlines are in the table for every replica).
            _ = changes.recv() => {
                changes = changes.resubscribe();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = &mut due => {}
                    _ = tokio::time::sleep_until(pass_started + MIN_NAP) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(failed: &[Uuid]) -> Pass {
        Pass {
            fired: 0,
            failed: failed.to_vec(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_session_is_skipped_longer_after_each_failure_and_forgotten_once_it_goes() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut failing = Failing::default();
        failing.record(&pass(&[a]), &[]);
        assert_eq!(failing.skip(), [a], "skipped after its first failure");
        tokio::time::advance(Duration::from_millis(1900)).await;
        assert_eq!(failing.skip(), [a]);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(failing.skip().is_empty(), "tried again after 2 s");
        // Both fail now: a for the second time (4 s), b for the first (2 s).
        failing.record(&pass(&[a, b]), &[]);
        tokio::time::advance(Duration::from_millis(2100)).await;
        assert_eq!(failing.skip(), [a], "b waits 2 s, a 4 s");
        tokio::time::advance(Duration::from_secs(2)).await;
        // A pass that tries them and sees no failure forgets them.
        failing.record(&pass(&[]), &[]);
        assert!(failing.0.is_empty());
        // The wait never exceeds the cap.
        for _ in 0..20 {
            failing.record(&pass(&[a]), &[]);
        }
        let (_, retry_at) = failing.0[&a];
        assert!(retry_at - tokio::time::Instant::now() <= MAX_FAILED_BACKOFF);
    }
}
