//! Bounds on client connections, so that neither idle nor half-open
//! connections can pile up on a replica: a cap in all and per peer, a
//! handshake deadline, and an idle timeout for connections with no call
//! open (an open stream is a call) ([`ConnectionLimits`]). The accepted
//! socket is a [`Conn`] that holds its place and checks the deadlines;
//! [`Connections`] tells it when calls start and end.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};
use tower::Service;

use super::layer::{Answer, Around, AroundLayer};

/// Who a per-peer limit counts an address as: an IPv4 address (mapped ones
/// included) is itself; an IPv6 one is its /64, which one host usually
/// holds whole. (Behind a proxy every peer is the proxy: see
/// docs/OPERATIONS.md, "Limits".)
pub fn peer(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V4(_) => ip,
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.into(),
            None => {
                let s = v6.segments();
                std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0).into()
            }
        },
    }
}

/// The bounds of one replica's connections (`server.max_connections`,
/// `server.handshake_timeout_seconds`, `server.idle_timeout_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max: usize,
    /// Most connections from one peer ([`peer`]).
    pub per_peer: usize,
    pub handshake: Duration,
    pub idle: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max: 4096,
            per_peer: 256,
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(300),
        }
    }
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4) is this long.
const PREFACE_LEN: usize = 24;

/// What a connection and its requests share.
#[derive(Debug)]
struct Activity {
    /// Calls open now.
    open: AtomicUsize,
    /// When the connection was accepted.
    accepted: Instant,
    /// When it was last active (bytes received, a call started or ended),
    /// in milliseconds after `accepted`: an atomic, as every read touches it.
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.accepted + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A connection's connect info: tonic's, and its activity.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub tcp: TcpConnectInfo,
    activity: Arc<Activity>,
}

/// An accepted connection under the limits.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    info: ConnInfo,
    limits: ConnectionLimits,
    /// Bytes received so far.
    received: usize,
    check: Pin<Box<Sleep>>,
    _place: OwnedSemaphorePermit,
    _peer_place: Option<PeerPlace>,
}

/// Connections open per peer.
type PeerCounts = Arc<Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// One connection's place in its peer's count, given back when dropped.
#[derive(Debug)]
struct PeerPlace {
    peer: std::net::IpAddr,
    counts: PeerCounts,
}

impl PeerPlace {
    /// A place for a connection from `peer`, if it has fewer than `max` open.
    fn take(counts: &PeerCounts, peer: std::net::IpAddr, max: usize) -> Option<PeerPlace> {
        let mut open = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(peer).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerPlace {
            peer,
            counts: counts.clone(),
        })
    }
}

impl Drop for PeerPlace {
    fn drop(&mut self) {
        let mut open = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

impl Conn {
    /// When the connection must have shown a sign of life by, as of now; `Err` when it is past.
    fn deadline(&self) -> Result<Instant, &'static str> {
        let now = Instant::now();
        let activity = &self.info.activity;
        let deadline = if self.received < PREFACE_LEN {
            let at = activity.accepted + self.limits.handshake;
            if now >= at {
                return Err("no HTTP/2 preface within the handshake timeout");
            }
            at
        } else if activity.open.load(Ordering::Acquire) > 0 {
            // Busy: look again an idle period from now.
            now + self.limits.idle
        } else {
            let at = activity.last() + self.limits.idle;
            if now >= at {
                return Err("idle past the idle timeout");
            }
            at
        };
        Ok(deadline)
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // What has arrived is read first, and counts as activity: a call
        // already on its way is not cut off by the idle check.
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        let got = buf.filled().len() - before;
        if got > 0 {
            this.received = this.received.saturating_add(got);
            this.info.activity.touch();
        }
        if read.is_ready() {
            return read;
        }
        // Nothing to read: the connection task polls its reads whenever it
        // runs, and the check's timer wakes it when a deadline may have passed.
        while this.check.as_mut().poll(cx).is_ready() {
            match this.deadline() {
                Ok(next) => this.check.as_mut().reset(next),
                Err(why) => {
                    tracing::debug!(peer = ?this.info.tcp.remote_addr, why, "closing a connection");
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
                }
            }
        }
        Poll::Pending
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The listen backlog of the API's socket: tokio's default (128, the old
/// `SOMAXCONN`) overflows under a burst of new connections, and a SYN past
/// it waits a second to be sent again; the kernel caps this at
/// `net.core.somaxconn`.
pub const BACKLOG: u32 = 4096;

/// Binds the API's socket with [`BACKLOG`].
pub fn bind(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The connections accepted on `listener`, each under `limits`: past the
/// cap, a connection is closed at once (and counted in `refused`,
/// `mentorship_connections_refused_total`).
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    refused: prometheus_client::metrics::counter::Counter,
) -> impl tokio_stream::Stream<Item = io::Result<Conn>> {
    let places = Arc::new(Semaphore::new(limits.max));
    let peers = PeerCounts::default();
    tokio_stream::StreamExt::filter_map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        move |accepted| {
            let stream = match accepted {
                Ok(stream) => stream,
                Err(err) => return Some(Err(err)),
            };
            let Ok(place) = places.clone().try_acquire_owned() else {
                refused.inc();
                tracing::debug!("refused a connection: the replica has as many as it takes");
                return None;
            };
            // A connection without a known peer address counts only in all.
            let peer_place = match stream.peer_addr() {
                Ok(addr) => match PeerPlace::take(&peers, peer(addr.ip()), limits.per_peer) {
                    Some(place) => Some(place),
                    None => {
                        refused.inc();
                        tracing::debug!(peer = %addr.ip(), "refused a connection: this peer has as many as it may");
                        return None;
                    }
                },
                Err(_) => None,
            };
            // Small request/response messages: disable Nagle so replies are not held back.
            let _ = stream.set_nodelay(true);
            let accepted = Instant::now();
            let info = ConnInfo {
                tcp: stream.connect_info(),
                activity: Arc::new(Activity {
                    open: AtomicUsize::new(0),
                    accepted,
                    last_ms: AtomicU64::new(0),
                }),
            };
            Some(Ok(Conn {
                stream,
                info,
                limits,
                received: 0,
                check: Box::pin(tokio::time::sleep_until(accepted + limits.handshake)),
                _place: place,
                _peer_place: peer_place,
            }))
        },
    )
}

/// Tells each request's connection when a call starts and ends, and puts
/// tonic's own connect info in the request (what `peer_ip` and
/// `Request::remote_addr` read). It goes before every layer that reads the peer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Connections;

impl Connections {
    pub fn layer() -> AroundLayer<Connections> {
        AroundLayer(Connections)
    }
}

/// A call open on its connection until dropped.
struct OpenCall(Arc<Activity>);

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<B: Send + 'static> Around<B> for Connections {
    fn around<S>(&self, mut inner: S, mut req: http::Request<B>) -> Answer<S::Error>
    where
        S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let extensions = req.extensions_mut();
        let info = extensions
            .get::<ConnInfo>()
            .or_else(|| {
                extensions
                    .get::<TlsConnectInfo<ConnInfo>>()
                    .map(TlsConnectInfo::get_ref)
            })
            .cloned();
        let call = info.map(|info| {
            extensions.insert(info.tcp.clone());
            let activity = info.activity;
            activity.open.fetch_add(1, Ordering::AcqRel);
            activity.touch();
            OpenCall(activity)
        });
        Box::pin(async move {
            let response = inner.call(req).await?;
            Ok(match call {
                Some(call) => response.map(|body| tonic::body::Body::new(super::body::Holding::new(body, call))),
                None => response,
            })
        })
    }
}
