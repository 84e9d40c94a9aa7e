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
    /// With [`TestTls::generate_mtls`]: the client certificate the server requires.
    pub client: Option<ClientCert>,
}

/// A client certificate (PEM) signed by the test CA, for a server requiring one.
#[derive(Clone)]
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestTls {
    /// Generates a new CA and server certificate.
    pub fn generate() -> anyhow::Result<Self> {
        Self::build(false)
    }

    /// Generates a new CA, a server certificate and a client certificate; the server
    /// requires a client certificate signed by the CA (mutual TLS) and refuses the handshake
    /// without one.
    pub fn generate_mtls() -> anyhow::Result<Self> {
        Self::build(true)
    }

    fn build(mtls: bool) -> anyhow::Result<Self> {
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
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let (builder, client) = if mtls {
            let key = rcgen::KeyPair::generate()?;
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "strata test client");
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let cert = params.signed_by(&key, &ca)?;
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der().clone())?;
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()?;
            (
                builder.with_client_cert_verifier(verifier),
                Some(ClientCert {
                    cert_pem: cert.pem(),
                    key_pem: key.serialize_pem(),
                }),
            )
        } else {
            (builder.with_no_client_auth(), None)
        };
        let mut server = builder.with_single_cert(
            vec![leaf.der().clone(), ca.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            ca_pem: ca.pem(),
            server: Arc::new(server),
            client,
        })
    }
}
