//! The census of sessions by status and of the queue, for the metrics: every
//! [`EVERY`], one replica recounts it (whichever finds it due first; the
//! others skip), and every replica reads the result into its metrics.
//! `step` is one round, for tests.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::domain::Result;
use crate::store::{Span, census};

/// How often the census is recounted, cluster-wide.
pub const EVERY: Duration = Duration::from_secs(15);

/// One round: recounts when the census is at least `every` old, then reads
/// it into this replica's metrics. Returns whether this replica counted.
pub async fn step(app: &App, every: Duration) -> Result<bool> {
    let counted = census::recount(&app.pool, every).await?;
    app.metrics.set_census(census::read(&app.pool).await?);
    Ok(counted)
}

/// Runs until `shutdown`.
pub async fn run(app: App, shutdown: CancellationToken) {
    loop {
        if let Err(err) =
            crate::store::bounded(&app.waits, Span::Short, app.rules.silent_connection, step(&app, EVERY)).await
        {
            tracing::warn!(error = %err, "census failed; trying again later");
        }
        // Read a little more often than it is recounted, so the metrics are
        // never more than about one period old.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY / 3) => {}
        }
    }
}
