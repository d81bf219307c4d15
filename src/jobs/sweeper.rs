//! Fires system timeouts (SPEC §4.1): max duration, pause timeout and no-show.
//!
//! Deadlines are stored with the session (`sessions.deadline`), so a restart
//! loses none. Every replica runs a sweeper; `FOR UPDATE SKIP LOCKED` hands
//! each due session to exactly one of them, and the transition re-checks the
//! session's state under that lock, so a timeout fires once.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::domain::{
    Result,
    command::Transition,
    session::{Command, Requester},
};
use crate::store::{idempotency, sessions};

/// The longest the sweeper sleeps: a deadline set behind the service's back
/// (or announced by no replica) is still picked up within a second.
const MAX_NAP: Duration = Duration::from_secs(1);

/// The shortest nap once a change commits anywhere (a change may arm an
/// earlier deadline or free a slot for the queue): a busy service sweeps at
/// most this often, an idle one once per [`MAX_NAP`].
const MIN_NAP: Duration = Duration::from_millis(250);

/// How often old request ids are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Fires every timeout that is due now; returns how many fired. A session
/// whose timeout fails (corrupt data, say) is logged and skipped for this
/// pass, so it never holds back the others.
pub async fn sweep_once(app: &App) -> Result<usize> {
    let mut fired = 0;
    let mut failed = Vec::new();
    loop {
        let mut unit = app.unit().await?;
        let Some((id, kind)) = sessions::lock_due(unit.tx(), &failed).await? else {
            return Ok(fired);
        };
        let timeout = Transition {
            reason: kind.clone(),
            ..Transition::new(id, Command::Timeout)
        };
        let outcome = match app.transition(&mut unit, Requester::System, timeout).await {
            Ok(_) => unit.commit().await,
            Err(err) => Err(err),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(session_id = %id, reason = %kind, "system timeout fired");
                fired += 1;
            }
            Err(err) => {
                tracing::error!(session_id = %id, reason = %kind, error = %err, "system timeout failed; skipping it");
                failed.push(id);
            }
        }
    }
}

/// Runs until `shutdown`: sleeps until the next deadline (at most
/// [`MAX_NAP`]; at least [`MIN_NAP`] once this replica commits something), then sweeps.
pub async fn run(app: App, shutdown: CancellationToken) {
    let mut last_purge = tokio::time::Instant::now();
    let mut changes = app.hub.subscribe_committed();
    while !shutdown.is_cancelled() {
        let pass_started = tokio::time::Instant::now();
        // A task per pass: even a panic cannot stop the sweeper for good.
        let pass = app.clone();
        match tokio::spawn(async move { sweep_once(&pass).await }).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "sweep failed; retrying"),
            Err(err) => tracing::error!(error = %err, "sweep panicked; retrying"),
        }
        // The backstop of promotion: a release that raced with a session
        // joining the queue leaves it waiting no longer than one pass.
        if let Err(err) = app.promote_waiting().await {
            tracing::warn!(error = %err, "promotion pass failed; retrying");
        }
        if last_purge.elapsed() > PURGE_EVERY {
            last_purge = tokio::time::Instant::now();
            if let Err(err) = idempotency::purge(&app.pool, app.rules.idempotency_retention_hours).await {
                tracing::warn!(error = %err, "purging request ids failed");
            }
        }
        let nap = match sessions::next_deadline(&app.pool).await {
            Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or_default().min(MAX_NAP),
            _ => MAX_NAP,
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
