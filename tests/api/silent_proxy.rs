//! A TCP proxy between a replica and PostgreSQL that can go silent on the
//! connections it already carries: their bytes are read and dropped, both
//! ways, with no reset, while new connections pass as before. That is what
//! a hung backend, a cut network or an old primary behind a proxy look like
//! to the connections a replica holds. It can also cut a connection at its
//! next COMMIT, delivered to the server or not, before any answer comes
//! back: a commit whose outcome the client cannot know.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

pub struct SilentProxy {
    pub addr: SocketAddr,
    /// Connections accepted before this generation are silent.
    silenced_before: Arc<AtomicU64>,
    generation: Arc<AtomicU64>,
    /// The next COMMIT: 0 passes, 1 is delivered and then cut, 2 is cut
    /// before the server sees it.
    cut_commit: Arc<AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

/// Where the two directions of one connection stand.
#[derive(Clone)]
struct Link {
    born: u64,
    silenced_before: Arc<AtomicU64>,
    cut_commit: Arc<AtomicU8>,
    /// Set when this connection's COMMIT was cut: nothing more passes.
    cut: Arc<AtomicBool>,
}

impl SilentProxy {
    /// Forwards loopback connections to `upstream`.
    pub async fn start(upstream: SocketAddr) -> SilentProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("its address");
        let silenced_before = Arc::new(AtomicU64::new(0));
        let generation = Arc::new(AtomicU64::new(1));
        let cut_commit = Arc::new(AtomicU8::new(0));
        let (silenced, next, cuts) = (silenced_before.clone(), generation.clone(), cut_commit.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let link = Link {
                    born: next.load(Ordering::SeqCst),
                    silenced_before: silenced.clone(),
                    cut_commit: cuts.clone(),
                    cut: Arc::new(AtomicBool::new(false)),
                };
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = pipe(client_read, server_write, link.clone(), true);
                    let down = pipe(server_read, client_write, link, false);
                    tokio::join!(up, down);
                });
            }
        });
        SilentProxy {
            addr,
            silenced_before,
            generation,
            cut_commit,
            task,
        }
    }

    /// The connections open now go silent; later ones pass.
    pub fn silence_existing(&self) {
        let now = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.silenced_before.store(now, Ordering::SeqCst);
    }

    /// Cuts the next COMMIT any connection sends: delivered to the server
    /// first when `deliver`, and then the connection closes both ways
    /// before any answer reaches the client.
    pub fn cut_next_commit(&self, deliver: bool) {
        self.cut_commit.store(if deliver { 1 } else { 2 }, Ordering::SeqCst);
    }

    /// `url` (a `postgres://user@host:port/db` URL) through this proxy.
    pub fn url(&self, url: &str) -> String {
        let (scheme_user, rest) = url.split_once('@').expect("user@host");
        let (_, path) = rest.split_once('/').expect("host/db");
        format!("{scheme_user}@{}/{path}", self.addr)
    }
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A COMMIT as a client sends it: a simple-query message ('Q', its length
/// 11, the text and its NUL), which no other statement's bytes contain.
const COMMIT: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

/// Copies `from` to `to` until either closes; once the connection is
/// silenced, what arrives is read and dropped. Going `up` (client to
/// server), a COMMIT may be cut; after a cut nothing passes either way, and
/// each direction closes.
async fn pipe(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, link: Link, up: bool) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if link.cut.load(Ordering::SeqCst) {
            return;
        }
        if link.born < link.silenced_before.load(Ordering::SeqCst) {
            continue;
        }
        if up && buf[..n].windows(COMMIT.len()).any(|w| w == COMMIT) {
            let how = link.cut_commit.swap(0, Ordering::SeqCst);
            if how != 0 {
                link.cut.store(true, Ordering::SeqCst);
                if how == 1 {
                    let _ = to.write_all(&buf[..n]).await;
                }
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
