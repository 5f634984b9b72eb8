//! Why a TLS member hung up on us.
//!
//! With TLS 1.3 a server judges the client's certificate after the client considers the
//! handshake done: a member that wants one (etcd's `--client-cert-auth`) and got none, or got
//! one it does not trust, sends an alert and closes. An HTTP client that has already written
//! its request may see only the closed connection — the alert lost to the TCP reset its write
//! provoked — which reads like a network failure and would be retried in vain for the whole
//! step. So after a failure that does not already name a certificate, drover makes one
//! handshake of its own with the same trust and identity, writes nothing, and reads: the
//! member's alert, if it sends one, is the cause.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A TLS handshake with a member's trust and identity, made only to hear its refusal.
pub(crate) struct Probe {
    connector: TlsConnector,
}

impl Probe {
    /// `ca_pem`: the members' CA (none: the system's trust store); `identity_pem`: the client
    /// certificate followed by its key.
    pub(crate) fn new(ca_pem: Option<&[u8]>, identity_pem: Option<&[u8]>) -> Result<Probe, String> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_pem {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem) {
                    roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
                }
            }
            None => {
                let _ = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match identity_pem {
            Some(pem) => {
                let chain =
                    CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
                let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| e.to_string())?;
                builder.with_client_auth_cert(chain, key).map_err(|e| e.to_string())?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Probe { connector: TlsConnector::from(Arc::new(config)) })
    }

    /// The alert the member at `url` (https) answers a handshake with, if it sends one within
    /// `wait`. `None`: it accepted us, or could not be reached — nothing learned.
    pub(crate) async fn refusal(&self, url: &str, wait: Duration) -> Option<String> {
        let url = reqwest::Url::parse(url).ok()?;
        if url.scheme() != "https" {
            return None;
        }
        let host = url.host_str()?.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = url.port_or_known_default()?;
        let name = ServerName::try_from(host.clone()).ok()?;
        let attempt = async {
            let tcp = TcpStream::connect((host.as_str(), port)).await.ok()?;
            let mut tls = match self.connector.connect(name, tcp).await {
                Ok(tls) => tls,
                // TLS 1.2 refuses within the handshake.
                Err(e) => return alert(e),
            };
            let mut byte = [0u8; 1];
            match tls.read(&mut byte).await {
                Err(e) => alert(e),
                Ok(_) => None,
            }
        };
        tokio::time::timeout(wait, attempt).await.ok().flatten()
    }
}

/// The text of a TLS alert the peer sent, and only that.
fn alert(e: std::io::Error) -> Option<String> {
    let text = e.to_string();
    text.contains("alert").then_some(text)
}
