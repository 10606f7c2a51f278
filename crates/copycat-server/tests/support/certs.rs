//! Test certificates made with rcgen: a CA, and certificates it signs for
//! servers (usable for both sides of a TLS connection, as peers need) and
//! clients.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate chain and its private key, as PEM.
#[derive(Clone)]
pub struct Identity {
    pub cert: String,
    pub key: String,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        Self { cert, key }
    }

    /// The CA's certificate (what servers and clients trust).
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate naming `sans` (IP addresses or DNS names), for server
    /// and client authentication.
    pub fn issue(&self, name: &str, sans: &[&str]) -> Identity {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed");
        Identity {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}
