//! TLS on the one port, with ALPN offering `h2` and `http/1.1`: tonic's
//! own TLS offers only `h2`, which would leave REST and gRPC-web clients
//! that speak HTTP/1.1 without a protocol. The handshake runs here, on
//! each connection accepted under [`super::connections`]' bounds, within
//! the handshake deadline and concurrently with the others; the server then
//! serves the decrypted stream, HTTP/2 or HTTP/1.1 by its first bytes.
//! Mutual TLS verifies the client's certificate against the configured CA
//! as before.

use std::{io, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        RootCertStore, ServerConfig,
        crypto::ring,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        server::WebPkiClientVerifier,
    },
    server::TlsStream,
};
use tokio_stream::{Stream, StreamExt};

use super::connections::Conn;

/// The server's TLS certificate chain and key, and for mutual TLS the CA
/// that every client's certificate must chain to (PEM, as read from the
/// `MENTORSHIP_TLS_*` files).
#[derive(Clone, PartialEq, Eq)]
pub struct Tls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Tls {
    /// Never shows the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish()
    }
}

impl Tls {
    /// Reads the PEM files.
    pub fn load(
        cert: &std::path::Path,
        key: &std::path::Path,
        client_ca: Option<&std::path::Path>,
    ) -> anyhow::Result<Tls> {
        let read = |path: &std::path::Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
        Ok(Tls {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            client_ca_pem: client_ca.map(read).transpose()?,
        })
    }
}

/// The server's rustls configuration from the PEM files of [`Tls`].
pub(crate) fn server_config(tls: &Tls) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &tls.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                roots
                    .add(cert.context("the client CA (MENTORSHIP_TLS_CLIENT_CA)")?)
                    .context("the client CA (MENTORSHIP_TLS_CLIENT_CA)")?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .context("the client CA (MENTORSHIP_TLS_CLIENT_CA)")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let certs = CertificateDer::pem_slice_iter(&tls.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("the TLS certificate (MENTORSHIP_TLS_CERT)")?;
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem).context("the TLS key (MENTORSHIP_TLS_KEY)")?;
    let mut config = builder
        .with_single_cert(certs, key)
        .context("the TLS certificate or key (MENTORSHIP_TLS_*)")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `incoming`'s connections after their TLS handshakes. A handshake that
/// fails or outlasts `handshake` drops its connection; the rest are served
/// in the order they finish. Accepting (and every handshake under way)
/// stops when `stop` is cancelled or the server drops the stream, which
/// closes the listener.
pub(crate) fn accept(
    incoming: impl Stream<Item = io::Result<Conn>> + Send + 'static,
    config: Arc<ServerConfig>,
    handshake: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = io::Result<TlsStream<Conn>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        let acceptor = TlsAcceptor::from(config);
        let mut incoming = std::pin::pin!(incoming);
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                _ = stop.cancelled() => return,
                next = incoming.next() => next,
            };
            let conn = match next {
                None => return,
                Some(Err(err)) => {
                    if tx.send(Err(err)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Some(Ok(conn)) => conn,
            };
            let (acceptor, tx, stop) = (acceptor.clone(), tx.clone(), stop.clone());
            tokio::spawn(async move {
                let handshaken = tokio::select! {
                    _ = stop.cancelled() => return,
                    done = tokio::time::timeout(handshake, acceptor.accept(conn)) => done,
                };
                match handshaken {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(err)) => tracing::debug!(error = %err, "a TLS handshake failed"),
                    Err(_) => tracing::debug!("a TLS handshake outlasted the handshake deadline"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
