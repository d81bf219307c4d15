//! The gRPC edge: generated types, handlers, auth layer, status mapping,
//! health and reflection. Every tonic type of the service lives under here.

pub mod auth;
mod bookings;
pub mod convert;
mod directory;
mod sessions;
pub mod status;
pub mod trace;

use std::{sync::Arc, time::Duration};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tonic::{Response, Status};

use crate::app::unit::Unit;
use crate::domain::{Error, access::Principal, input};
use crate::store::idempotency::{self, Claim};
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

/// How a mutation begins: a replay of a remembered response, or a fresh
/// transaction to make the change in.
enum Begun<Resp> {
    Replay(Resp),
    Fresh(Mutation),
}

/// The unit of work of one mutating call and the request id it claimed.
struct Mutation {
    unit: Unit,
    key: Option<uuid::Uuid>,
}

impl Mutation {
    /// Remembers the response under the claimed request id (in the same
    /// transaction as the change) and commits.
    async fn finish<Resp: prost::Message>(mut self, response: Resp) -> Result<Response<Resp>, Status> {
        if let Some(key) = self.key {
            idempotency::remember(self.unit.tx(), key, &response.encode_to_vec()).await?;
        }
        self.unit.commit().await?;
        Ok(Response::new(response))
    }
}

impl Api {
    /// Starts a mutation honouring `request_id`: a retry with the same id gets
    /// the stored first response and changes nothing; the same id with a
    /// different request is refused.
    async fn begin<Req, Resp>(
        &self,
        who: &Principal,
        method: &str,
        request_id: &str,
        request: &Req,
    ) -> Result<Begun<Resp>, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let key = input::optional_id("request_id", request_id)?;
        if let Some(key) = key {
            tracing::Span::current().record("request_id", tracing::field::display(key));
        }
        let mut unit = Unit::begin(&self.app).await?;
        if let Some(key) = key {
            let mut hasher = Sha256::new();
            hasher.update(method.as_bytes());
            hasher.update(who.user_id.as_bytes());
            hasher.update(request.encode_to_vec());
            let fingerprint = hasher.finalize().to_vec();
            if let Claim::Seen {
                fingerprint: first,
                response,
            } = idempotency::claim(unit.tx(), key, &fingerprint).await?
            {
                if first != fingerprint {
                    return Err(Error::invalid(
                        "request_id",
                        "was already used for a different request; use a new request_id",
                    )
                    .into());
                }
                let replay = Resp::decode(response.as_slice())
                    .map_err(|e| Error::Internal(anyhow::Error::new(e).context("stored response")))?;
                return Ok(Begun::Replay(replay));
            }
        }
        Ok(Begun::Fresh(Mutation { unit, key }))
    }
}

/// Begins a mutation or returns the replayed response from the handler.
macro_rules! begin_or_replay {
    ($api:expr, $who:expr, $method:literal, $req:expr) => {
        match $api.begin($who, $method, &$req.request_id, &$req).await? {
            crate::grpc::Begun::Replay(response) => return Ok(tonic::Response::new(response)),
            crate::grpc::Begun::Fresh(mutation) => mutation,
        }
    };
}
pub(crate) use begin_or_replay;

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
