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

use crate::domain::{Error, access::Principal, input};
use crate::store::idempotency::{self, Claim};
use crate::store::unit::Unit;
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

/// A request parsed once, at the edge, into the value its use case takes
/// (a `domain::command` or `domain::query`). Every field violation is
/// reported at once, in one `BadRequest`, and nothing downstream sees raw input.
pub trait Parse {
    type Parsed;
    fn parse(&self) -> Result<Self::Parsed, Error>;
}

/// A mutating request: it may carry a `request_id`.
pub trait Mutating: prost::Message {
    fn request_id(&self) -> &str;
}

/// Implements [`Mutating`] for requests with a `request_id` field.
macro_rules! mutating {
    ($($request:ty),* $(,)?) => {
        $(impl crate::grpc::Mutating for $request {
            fn request_id(&self) -> &str {
                &self.request_id
            }
        })*
    };
}
pub(crate) use mutating;

/// How a mutation begins: a replay of a remembered response, or a fresh
/// unit of work to make the change in.
enum Begun<Resp> {
    Replay(Resp),
    Fresh(Unit, Option<uuid::Uuid>),
}

impl Api {
    /// A read: the caller (already authenticated and allowed by its roles),
    /// the request parsed once, then the use case.
    async fn read<Req: Parse, Resp>(
        &self,
        req: tonic::Request<Req>,
        run: impl AsyncFnOnce(&App, Principal, Req::Parsed) -> Result<Resp, Error>,
    ) -> Result<Response<Resp>, Status> {
        let who = auth::principal(&req)?;
        let parsed = req.get_ref().parse()?;
        Ok(Response::new(run(&self.app, who, parsed).await?))
    }

    /// A mutation: the caller, the request parsed once, then a unit of work
    /// that claims the `request_id` (a retry gets the first response and
    /// changes nothing), runs the use case, and commits the change together
    /// with the response it remembers.
    async fn mutate<Req: Parse + Mutating, Resp: prost::Message + Default>(
        &self,
        req: tonic::Request<Req>,
        run: impl AsyncFnOnce(&App, &mut Unit, &Principal, Req::Parsed) -> Result<Resp, Error>,
    ) -> Result<Response<Resp>, Status> {
        let who = auth::principal(&req)?;
        let method = auth::method(&req)?;
        let request = req.into_inner();
        let parsed = request.parse()?;
        let (mut unit, key) = match self.begin(&who, method, &request).await? {
            Begun::Replay(response) => return Ok(Response::new(response)),
            Begun::Fresh(unit, key) => (unit, key),
        };
        let response = run(&self.app, &mut unit, &who, parsed).await?;
        if let Some(key) = key {
            idempotency::remember(unit.tx(), key, &response.encode_to_vec()).await?;
        }
        unit.commit().await?;
        Ok(Response::new(response))
    }

    /// Opens the unit of work of a mutation and claims its `request_id`.
    async fn begin<Req: Mutating, Resp: prost::Message + Default>(
        &self,
        who: &Principal,
        method: &str,
        request: &Req,
    ) -> Result<Begun<Resp>, Error> {
        let key = input::optional_id("request_id", request.request_id())?;
        let mut unit = self.app.unit().await?;
        let Some(key) = key else {
            return Ok(Begun::Fresh(unit, None));
        };
        tracing::Span::current().record("request_id", tracing::field::display(key));
        // The same id is the same request only from the same caller, for the same RPC, with the same body.
        let mut hasher = Sha256::new();
        hasher.update(method.as_bytes());
        hasher.update(who.user_id.as_bytes());
        hasher.update(request.encode_to_vec());
        let fingerprint = hasher.finalize().to_vec();
        match idempotency::claim(unit.tx(), key, &fingerprint).await? {
            Claim::Fresh => Ok(Begun::Fresh(unit, Some(key))),
            Claim::Seen { fingerprint: first, .. } if first != fingerprint => Err(Error::invalid(
                "request_id",
                "was already used for a different request; use a new request_id",
            )),
            Claim::Seen { response, .. } => Resp::decode(response.as_slice())
                .map(Begun::Replay)
                .map_err(|e| Error::Internal(anyhow::Error::new(e).context("stored response"))),
        }
    }
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
