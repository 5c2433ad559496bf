//! HTTPS for the webhook: a rustls certificate resolver whose certificate is
//! swapped in place when the Secret changes (no restart, no dropped
//! connections), and an axum listener that does the TLS handshakes.
//!
//! ```text
//!  Secret watch ──set()──► SwapCert ◄──resolve (each handshake)── TcpListener ─► TlsListener ─► axum
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the certificate PEM holds no certificate ({0})")]
    Cert(String),
    #[error("the key PEM holds no private key ({0})")]
    Key(String),
    #[error("certificate and key do not go together: {0}")]
    Pair(#[source] rustls::Error),
}

/// The certificate every new handshake gets; none until the first `set`,
/// so a replica without one fails handshakes (the API server then applies
/// the failurePolicy).
#[derive(Debug, Default)]
pub struct SwapCert(RwLock<Option<Arc<CertifiedKey>>>);

impl SwapCert {
    /// Checks and installs a certificate chain and key (PEM).
    pub fn set(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Cert(e.to_string()))?;
        if chain.is_empty() {
            return Err(TlsError::Cert("empty".into()));
        }
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
        let ck = CertifiedKey::from_der(chain, key, &provider).map_err(TlsError::Pair)?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(ck));
        Ok(())
    }

    pub fn is_set(&self) -> bool {
        self.0.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}

impl ResolvesServerCert for SwapCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Accepted and handshaken connections, for `axum::serve`.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Handshakes run in tasks of their own, so a slow client holds up no
    /// one else. The accept task ends when the listener is dropped.
    pub fn new(tcp: TcpListener, certs: Arc<SwapCert>) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(certs);
        // The workspace builds axum with HTTP/1 only.
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(cfg));
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp_stream, peer) = tokio::select! {
                    r = tcp.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::debug!(error = %e, "webhook accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = tx.closed() => return,
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp_stream)).await
                    {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "webhook TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "webhook TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
