//! The control plane's certificates: a CA, the API server's serving certificate signed by it
//! (for 127.0.0.1 and the in-cluster names), and the service-account signing key.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

pub struct Pki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub sa_key_pem: String,
    pub sa_pub_pem: String,
}

impl Pki {
    pub fn new() -> Result<Pki, String> {
        let e = |e: rcgen::Error| format!("cannot make the control plane's certificates: {e}");
        let ca_key = KeyPair::generate().map_err(e)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        ca.distinguished_name.push(DnType::CommonName, "drover test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
        let issuer = Issuer::new(ca, ca_key);

        let names =
            ["127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "10.96.0.1"];
        let server_key = KeyPair::generate().map_err(e)?;
        let mut server = CertificateParams::new(names.map(String::from).to_vec()).map_err(e)?;
        server.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        let server_cert = server.signed_by(&server_key, &issuer).map_err(e)?;

        let sa_key = KeyPair::generate().map_err(e)?;
        Ok(Pki {
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            sa_key_pem: sa_key.serialize_pem(),
            sa_pub_pem: sa_key.public_key_pem(),
        })
    }
}
