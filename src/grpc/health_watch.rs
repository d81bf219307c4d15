//! Caps on open `grpc.health.v1.Health/Watch` streams, per peer address
//! and in all. Health needs no token, so without a cap anyone could hold
//! any number of streams open; with only a total, one peer could take them
//! all and every other client's health check (gRPC's client-side health
//! checking uses Watch) would be refused. The peer is its IP address, not
//! its port: one host opening many connections is one peer.

use tower::Service;

use super::layer::{Answer, Around, AroundLayer};
use crate::app::quotas::{Quota, QuotaLimits};
use crate::domain::Reason;

const PATH: &str = "/grpc.health.v1.Health/Watch";

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct HealthWatch {
    quota: Quota,
}

impl HealthWatch {
    /// At most `per_peer` Health/Watch streams open at once from one peer
    /// address, and `max` on this replica.
    pub(crate) fn layer(per_peer: usize, max: usize) -> AroundLayer<HealthWatch> {
        AroundLayer(HealthWatch {
            quota: Quota::new(QuotaLimits {
                what: "Health/Watch streams",
                reason: Reason::TooManyStreams,
                caller: "peer address",
                per_caller: (per_peer, "health_watch_streams_per_peer"),
                total: (max, "health_watch_streams"),
            }),
        })
    }
}

impl<B: Send + 'static> Around<B> for HealthWatch {
    fn around<S>(&self, mut inner: S, req: http::Request<B>) -> Answer<S::Error>
    where
        S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
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
