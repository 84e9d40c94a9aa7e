//! TLS material generated at start: a CA and a server certificate for 127.0.0.1/localhost.

use std::sync::Arc;

/// Generating certificates or building the TLS configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rcgen could not build a certificate.
    #[error("generating the kubesim TLS certificates failed: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("building the kubesim TLS server configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The generated CA (PEM) and the server configuration using the server certificate.
pub struct Tls {
    /// The CA certificate that signed the server certificate (PEM).
    pub ca_pem: String,
    /// rustls configuration with ALPN `h2` and `http/1.1`.
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Generates a fresh CA and a server certificate valid for 127.0.0.1, ::1, localhost and the
/// in-cluster service names.
pub fn generate() -> Result<Tls> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kubesim-ca");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let server_key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "::1".to_string(),
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
    ])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &issuer)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone(), ca_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        ca_pem: ca_cert.pem(),
        server_config: Arc::new(cfg),
    })
}
