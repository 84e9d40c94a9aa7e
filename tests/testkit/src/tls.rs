//! A throw-away certificate authority and a server certificate for 127.0.0.1, for HTTPS test
//! servers (clients trust the CA through a CA file, as users would configure them).

use std::sync::Arc;

/// A test CA and the rustls configuration of a server whose certificate it signed.
#[derive(Clone)]
pub struct TestTls {
    /// The CA certificate (PEM), for clients.
    pub ca_pem: String,
    /// Server configuration (HTTP/1.1 only) presenting a certificate for 127.0.0.1/localhost.
    pub server: Arc<rustls::ServerConfig>,
}

impl TestTls {
    /// Generates a new CA and server certificate.
    pub fn generate() -> anyhow::Result<Self> {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "testkit test CA");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate()?)?;

        let key = rcgen::KeyPair::generate()?;
        let mut leaf =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf.signed_by(&key, &ca)?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone(), ca.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            ca_pem: ca.pem(),
            server: Arc::new(server),
        })
    }
}
