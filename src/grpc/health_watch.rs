//! Caps on open `grpc.health.v1.Health/Watch` streams, per peer address
//! and in all. Health needs no token, so without a cap anyone could hold
//! any number of streams open; with only a total, one peer could take them
//! all and every other client's health check (gRPC's client-side health
//! checking uses Watch) would be refused. The peer is its IP address, not
//! its port: one host opening many connections is one peer.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use tower::{Layer, Service};

use crate::app::quotas::{Quota, QuotaLimits};
use crate::domain::Reason;

const PATH: &str = "/grpc.health.v1.Health/Watch";

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct HealthWatchLayer {
    quota: Quota,
}

impl HealthWatchLayer {
    /// At most `per_peer` Health/Watch streams open at once from one peer
    /// address, and `max` on this replica.
    pub(crate) fn new(per_peer: usize, max: usize) -> Self {
        HealthWatchLayer {
            quota: Quota::new(QuotaLimits {
                what: "Health/Watch streams",
                reason: Reason::TooManyStreams,
                caller: "peer address",
                per_caller: (per_peer, "health_watch_streams_per_peer"),
                total: (max, "health_watch_streams"),
            }),
        }
    }
}

impl<S> Layer<S> for HealthWatchLayer {
    type Service = HealthWatch<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HealthWatch {
            inner,
            quota: self.quota.clone(),
        }
    }
}

/// See [`HealthWatchLayer`].
#[derive(Debug, Clone)]
pub(crate) struct HealthWatch<S> {
    inner: S,
    quota: Quota,
}

impl<S, B> Service<http::Request<B>> for HealthWatch<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let mut inner = crate::grpc::layer::take_ready(&mut self.inner);
        if req.uri().path() != PATH {
            return Box::pin(inner.call(req));
        }
        // Every caller of health is anonymous: counted by its address.
        let peer = peer_ip(&req).map(|ip| ip.to_string()).unwrap_or_default();
        let slot = match self.quota.acquire(&peer) {
            Ok(slot) => slot,
            Err(err) => {
                let response = tonic::Status::from(err).into_http();
                return Box::pin(async move { Ok(response) });
            }
        };
        Box::pin(async move {
            let response = inner.call(req).await?;
            Ok(response.map(|body| tonic::body::Body::new(super::body::Holding::new(body, slot))))
        })
    }
}

/// The peer a request came from, over TCP or TLS, as the per-peer limits
/// count it ([`super::connections::peer`]: an IPv6 address by its /64).
pub(crate) fn peer_ip<B>(req: &http::Request<B>) -> Option<std::net::IpAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let extensions = req.extensions();
    let tcp = extensions.get::<TcpConnectInfo>().or_else(|| {
        extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .map(TlsConnectInfo::get_ref)
    })?;
    tcp.remote_addr().map(|addr| super::connections::peer(addr.ip()))
}
