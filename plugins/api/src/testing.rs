//! Helpers for testing an action outside the engine: a host that approves every gate and
//! discards progress, and a context built from sites and a time budget.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::{ActionError, Mode, Progress, StepContext, StepHost};

/// Approves every gate as `tester`; progress, notes and checkpoints go nowhere.
pub struct NullHost;

#[async_trait]
impl StepHost for NullHost {
    fn progress(&self, _: &str, _: Progress) {}
    fn note(&self, _: &str, _: &str) {}
    async fn checkpoint(&self, _: &str, _: Value) {}
    async fn approve(&self, _: &str, _: &str) -> Result<String, ActionError> {
        Ok("tester".into())
    }
}

/// A running step (`run`/`step-1`, attempt 1) with these sites and this much time left.
pub fn context(sites: BTreeMap<String, Value>, budget: Duration) -> StepContext {
    StepContext::new(
        "run",
        "step-1",
        1,
        Mode::Run,
        Some(tokio::time::Instant::now() + budget),
        Arc::new(sites),
        Default::default(),
        Arc::new(NullHost),
        None,
    )
}

/// A TLS acceptor with a fresh self-signed certificate for `localhost` and `127.0.0.1`, and
/// that certificate as PEM for clients to trust. The simulators serve HTTPS with it, as the
/// real servers they stand in for do.
#[cfg(feature = "sim-tls")]
pub fn self_signed_tls() -> Result<(tokio_rustls::TlsAcceptor, String), String> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(|e| format!("cannot make a certificate: {e}"))?;
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .map_err(|e| format!("bad certificate: {e}"))?;
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(config)), pem))
}
