//! TLS for the API server: a fresh CA per cluster and a server certificate signed by it.
//!
//! The CA is written into the kubeconfig (`certificate-authority-data`), so kube-rs and kubectl
//! verify the server exactly as they verify a real one; nothing is ever trusted blindly.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The CA certificate (PEM, for the kubeconfig) and the rustls config serving the server cert.
pub(crate) struct ServerTls {
    pub ca_pem: String,
    pub config: Arc<rustls::ServerConfig>,
}

/// Generates a CA and a server certificate valid for `127.0.0.1`, `localhost` and `names`
/// (each an IP address or a DNS name).
pub(crate) fn generate(names: &[String]) -> anyhow::Result<ServerTls> {
    let ca_key = KeyPair::generate().context("could not generate the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "testcluster-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)
        .context("could not sign the CA certificate")?;

    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "testcluster-apiserver");
    let mut all: Vec<String> = vec!["127.0.0.1".into(), "localhost".into()];
    all.extend(names.iter().cloned());
    all.sort();
    all.dedup();
    for name in &all {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                name.clone()
                    .try_into()
                    .with_context(|| format!("invalid server name `{name}`"))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    let key = KeyPair::generate().context("could not generate the server key")?;
    let cert = params
        .signed_by(&key, &ca)
        .context("could not sign the server certificate")?;

    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("could not configure TLS")?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .context("could not load the server certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls {
        ca_pem: ca.pem(),
        config: Arc::new(config),
    })
}
