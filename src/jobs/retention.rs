//! The retention job (SPEC §4.4): purges expired history in batches, on one
//! replica at a time (a session-level advisory lock on its own connection).
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
/// another replica is purging right now.
pub async fn purge_once(app: &App) -> Result<Option<Purged>> {
    let cutoff = now() - app.rules.history.retention;
    let mut conn = app.pool.acquire().await?;
    if !retention::try_lock(&mut conn).await? {
        return Ok(None);
    }
    let mut total = Purged::default();
    let outcome = loop {
        match retention::purge_batch(&mut conn, cutoff, app.rules.history.purge_batch).await {
            Ok(batch) if batch == Purged::default() => break Ok(()),
            Ok(batch) => total += batch,
            Err(e) => break Err(e),
        }
    };
    retention::unlock(&mut conn).await?;
    outcome?;
    if total != Purged::default() {
        tracing::info!(purged = %total, "retention purge");
    }
    Ok(Some(total))
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
