//! A TCP proxy between a replica and PostgreSQL that can go silent on the
//! connections it already carries: their bytes are read and dropped, both
//! ways, with no reset, while new connections pass as before. That is what
//! a hung backend, a cut network or an old primary behind a proxy look like
//! to the connections a replica holds.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
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
    task: tokio::task::JoinHandle<()>,
}

impl SilentProxy {
    /// Forwards loopback connections to `upstream`.
    pub async fn start(upstream: SocketAddr) -> SilentProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("its address");
        let silenced_before = Arc::new(AtomicU64::new(0));
        let generation = Arc::new(AtomicU64::new(1));
        let (silenced, next) = (silenced_before.clone(), generation.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let born = next.load(Ordering::SeqCst);
                let silenced = silenced.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = pipe(client_read, server_write, born, silenced.clone());
                    let down = pipe(server_read, client_write, born, silenced);
                    tokio::join!(up, down);
                });
            }
        });
        SilentProxy {
            addr,
            silenced_before,
            generation,
            task,
        }
    }

    /// The connections open now go silent; later ones pass.
    pub fn silence_existing(&self) {
        let now = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.silenced_before.store(now, Ordering::SeqCst);
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

/// Copies `from` to `to` until either closes; once the connection is
/// silenced, what arrives is read and dropped.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    born: u64,
    silenced_before: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if born < silenced_before.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
