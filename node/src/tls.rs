//! TLS for the gRPC port (rustls through tonic): server identity, optional
//! client-certificate verification (mutual TLS), and the client side that
//! nodes, the operator and raftcronctl use.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--tls-cert and --tls-key must be given together")]
    Incomplete,
    #[error(
        "--tls-ca is required with TLS: mutual TLS is on by default and verifies \
         peer and client certificates against it (--tls-client-auth=false turns it off)"
    )]
    ClientAuthWithoutCa,
}

/// Certificate files of a node (PEM).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that signed the peers' certificates; verifies servers, and clients
    /// when `client_auth` is on.
    pub ca: Option<PathBuf>,
    /// Require a client certificate signed by `ca` (mutual TLS).
    pub client_auth: bool,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

impl TlsFiles {
    /// Builds the settings from optional flags; None when TLS is off.
    pub fn from_flags(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
        client_auth: Option<bool>,
    ) -> Result<Option<Self>, TlsError> {
        match (cert, key) {
            (None, None) if client_auth != Some(true) => Ok(None),
            (Some(cert), Some(key)) => {
                // Mutual TLS unless turned off explicitly.
                let client_auth = client_auth.unwrap_or(true);
                if !client_auth {
                    tracing::warn!(
                        "TLS without client certificates: any client that trusts our CA may call this node"
                    );
                }
                if client_auth && ca.is_none() {
                    return Err(TlsError::ClientAuthWithoutCa);
                }
                Ok(Some(Self {
                    cert,
                    key,
                    ca,
                    client_auth,
                }))
            }
            _ => Err(TlsError::Incomplete),
        }
    }

    pub fn server(&self) -> Result<ServerTlsConfig, TlsError> {
        let identity =
            Identity::from_pem(read("certificate", &self.cert)?, read("key", &self.key)?);
        let mut cfg = ServerTlsConfig::new().identity(identity);
        if let (true, Some(ca)) = (self.client_auth, &self.ca) {
            cfg = cfg.client_ca_root(Certificate::from_pem(read("CA certificate", ca)?));
        }
        Ok(cfg)
    }

    /// Client settings for node-to-node calls: trust `ca`, present our own
    /// certificate so peers requiring mutual TLS accept us.
    pub fn client(&self) -> Result<ClientTlsConfig, TlsError> {
        let identity =
            Identity::from_pem(read("certificate", &self.cert)?, read("key", &self.key)?);
        let mut cfg = ClientTlsConfig::new().identity(identity);
        if let Some(ca) = &self.ca {
            cfg = cfg.ca_certificate(Certificate::from_pem(read("CA certificate", ca)?));
        }
        Ok(cfg)
    }
}

/// Client-only settings (raftcronctl, the operator): a CA to trust and,
/// optionally, a client certificate.
pub fn client_config(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<ClientTlsConfig>, TlsError> {
    if ca.is_none() && cert.is_none() && key.is_none() {
        return Ok(None);
    }
    let mut cfg = ClientTlsConfig::new();
    if let Some(ca) = ca {
        cfg = cfg.ca_certificate(Certificate::from_pem(read("CA certificate", ca)?));
    }
    match (cert, key) {
        (Some(c), Some(k)) => {
            cfg = cfg.identity(Identity::from_pem(read("certificate", c)?, read("key", k)?))
        }
        (None, None) => {}
        _ => return Err(TlsError::Incomplete),
    }
    Ok(Some(cfg))
}

/// Makes ring the process's rustls crypto provider (tonic, kube and reqwest
/// all use rustls; ring is the one compiled in). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<PathBuf> {
        Some(PathBuf::from(s))
    }

    #[test]
    fn mutual_tls_is_the_default_once_tls_is_on() {
        let on = TlsFiles::from_flags(p("c.pem"), p("k.pem"), p("ca.pem"), None)
            .unwrap()
            .unwrap();
        assert!(on.client_auth);
        let err = TlsFiles::from_flags(p("c.pem"), p("k.pem"), None, None).unwrap_err();
        assert!(err.to_string().contains("--tls-ca"), "{err}");
        let off = TlsFiles::from_flags(p("c.pem"), p("k.pem"), None, Some(false))
            .unwrap()
            .unwrap();
        assert!(!off.client_auth);
        assert!(
            TlsFiles::from_flags(None, None, None, None)
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            TlsFiles::from_flags(None, None, None, Some(true)),
            Err(TlsError::Incomplete)
        ));
    }
}
