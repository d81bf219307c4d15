//! The gRPC edge: generated types, handlers, auth layer, status mapping,
//! health and reflection. Every tonic type of the service lives under here.

pub mod auth;
mod bookings;
pub mod convert;
mod directory;
mod sessions;
pub mod status;

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::service::Routes;

use crate::app::App;

/// Generated protobuf types and services of `mentorship.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("mentorship.v1");

    /// Descriptor set of `mentorship.v1`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mentorship_descriptor.bin"));
}

/// The handlers of all three services.
#[derive(Clone)]
pub struct Api {
    app: Arc<App>,
}

/// A validation that passed but left a value unset: a bug, not bad input.
fn incomplete() -> Status {
    Status::from(crate::domain::Error::Internal(anyhow::anyhow!(
        "request validation passed without producing every value"
    )))
}

/// Fully qualified names of the served application services.
pub const SERVICE_NAMES: [&str; 3] = [
    "mentorship.v1.DirectoryService",
    "mentorship.v1.BookingService",
    "mentorship.v1.SessionService",
];

/// Builds the routes: the three services, health and reflection (v1 and v1alpha).
pub fn routes(app: Arc<App>) -> anyhow::Result<(Routes, tonic_health::server::HealthReporter)> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let api = Api { app };
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let mut routes = Routes::builder();
    routes
        .add_service(pb::directory_service_server::DirectoryServiceServer::new(api.clone()))
        .add_service(pb::booking_service_server::BookingServiceServer::new(api.clone()))
        .add_service(pb::session_service_server::SessionServiceServer::new(api))
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);
    Ok((routes.routes(), reporter))
}

/// Sets every served name to the database's reachability; returns it.
pub async fn probe_database(pool: &sqlx::PgPool, reporter: &tonic_health::server::HealthReporter) -> bool {
    let ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(pool)).await,
        Ok(Ok(_))
    );
    let status = if ok {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    for name in SERVICE_NAMES.into_iter().chain([""]) {
        reporter.set_service_status(name, status).await;
    }
    ok
}

/// Keeps the health status in step with the database: NOT_SERVING while it is unreachable.
pub async fn watch_database_health(
    pool: sqlx::PgPool,
    reporter: tonic_health::server::HealthReporter,
    shutdown: CancellationToken,
) {
    let mut last = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let ok = probe_database(&pool, &reporter).await;
        if ok != last {
            if ok {
                tracing::info!("database reachable again: health is SERVING");
            } else {
                tracing::warn!("database unreachable: health is NOT_SERVING");
            }
            last = ok;
        }
    }
}
