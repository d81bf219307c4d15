//! The retention job (SPEC §4.4): purges expired history in batches, on one
//! replica at a time (a transaction advisory lock per batch).
//! `purge_once` is one run; the loop runs it every [`EVERY`].

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::{App, now};
use crate::domain::Result;
use crate::store::retention::{self, Purged};

/// How often each replica tries to purge.
const EVERY: Duration = Duration::from_secs(3600);
/// The first try, after start.
const FIRST_AFTER: Duration = Duration::from_secs(60);

/// Purges everything that expired, a batch per transaction; `None` when
/// another replica's purge holds the lock. Each batch takes the purge lock
/// for its transaction, so one replica purges at a time and a replica that
/// fails or dies mid-purge leaves no lock behind.
pub async fn purge_once(app: &App) -> Result<Option<Purged>> {
    let cutoff = now() - app.rules.history.retention;
    let mut total: Option<Purged> = None;
    loop {
        match retention::purge_batch(&app.pool, cutoff, app.rules.history.purge_batch).await? {
            // Another replica holds the lock: it carries on from here.
            None => break,
            Some(batch) => {
                let done = batch == Purged::default();
                *total.get_or_insert_with(Purged::default) += batch;
                if done {
                    break;
                }
            }
        }
    }
    if let Some(purged) = total.filter(|t| *t != Purged::default()) {
        tracing::info!(purged = %purged, "retention purge");
    }
    Ok(total)
}

/// What `purge_once` would remove now.
pub async fn plan(app: &App) -> Result<Purged> {
    retention::plan(&app.pool, now() - app.rules.history.retention).await
}

/// Runs until `shutdown`.
pub async fn run(app: App, shutdown: CancellationToken) {
    let mut wait = FIRST_AFTER;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = EVERY;
        if let Err(err) = purge_once(&app).await {
            tracing::warn!(error = %err, "retention purge failed; trying again later");
        }
    }
}
