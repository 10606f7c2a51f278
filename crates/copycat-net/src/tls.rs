//! Optional TLS (rustls, with the `ring` crypto provider) on the
//! connections servers and clients open.
//!
//! * [`ServerTls`]: what a server's listener presents (its certificate
//!   chain), whom it lets in (a client certificate, when one is sent or
//!   required, must chain to the CA bundle), and what it presents when it
//!   connects to its peers (the same certificate, verified by them against
//!   the same CA: mutual TLS between peers).
//! * [`ClientTls`]: how a client (or a server calling a peer) verifies the
//!   server it connects to: the server's certificate must chain to the CA
//!   bundle and name the host of the address dialed (a DNS name, or an IP
//!   address SAN for an IP literal).
//! * [`Stream`]: a connection that is either plain TCP or TLS, so the
//!   framing and everything above it is the same either way.
//!
//! Loading errors ([`TlsError`]) name the setting (`tls-cert`, `tls-key`,
//! `tls-ca`) and the file, and say what is wrong with it.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The first byte of a TLS handshake record: what a TLS listener expects
/// a connection to open with.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A connection: plain TCP, or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (either side of the handshake).
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Whether the other side presented a certificate that verified (only
    /// a TLS server's side of a connection can say yes).
    pub fn peer_verified(&self) -> bool {
        match self {
            Stream::Tls(tls) => match tls.as_ref() {
                tokio_rustls::TlsStream::Server(s) => s
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty()),
                tokio_rustls::TlsStream::Client(_) => false,
            },
            Stream::Plain(_) => false,
        }
    }
}

impl From<TcpStream> for Stream {
    fn from(stream: TcpStream) -> Self {
        Stream::Plain(stream)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// A TLS setting that cannot be used: which setting, which file, what is
/// wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsError {
    /// The setting: `tls-cert`, `tls-key` or `tls-ca`.
    pub key: &'static str,
    /// The file, when the value came from one.
    pub path: Option<PathBuf>,
    /// What is wrong.
    pub detail: String,
}

impl TlsError {
    fn new(key: &'static str, path: Option<&Path>, detail: impl Into<String>) -> Self {
        Self {
            key,
            path: path.map(Path::to_path_buf),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{} {}: {}", self.key, path.display(), self.detail),
            None => write!(f, "{}: {}", self.key, self.detail),
        }
    }
}

impl std::error::Error for TlsError {}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::new(key, Some(path), format!("cannot read: {e}")))
}

/// The certificates of a PEM file's `CERTIFICATE` sections, in order (at
/// least one).
fn certs(
    key: &'static str,
    path: Option<&Path>,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(key, path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            key,
            path,
            "holds no certificate (no BEGIN CERTIFICATE section)",
        ));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn private_key(
    key: &'static str,
    path: Option<&Path>,
    pem: &[u8],
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::new(
            key,
            path,
            "holds no private key (no BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section)",
        ),
        other => TlsError::new(key, path, format!("not valid PEM: {other}")),
    })
}

/// A root store of every certificate in a CA bundle.
fn roots(path: Option<&Path>, pem: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs("tls-ca", path, pem)? {
        store.add(cert).map_err(|e| {
            TlsError::new("tls-ca", path, format!("not a usable CA certificate: {e}"))
        })?;
    }
    Ok(Arc::new(store))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The PEM texts of a server's TLS settings (see [`ServerTls::from_pem`]).
struct ServerPem<'a> {
    cert: (&'a [u8], Option<&'a Path>),
    key: (&'a [u8], Option<&'a Path>),
    ca: (&'a [u8], Option<&'a Path>),
}

/// A server's TLS: see the [module](self).
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    peers: ClientTls,
    require_client_cert: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("require_client_cert", &self.require_client_cert)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Read a server's TLS settings from PEM files: `cert` its certificate
    /// chain (its own first), `key` its private key, `ca` the CA bundle its
    /// peers' (and clients') certificates must chain to. With
    /// `require_client_cert` every connection, clients' too, must present
    /// a certificate; otherwise only peers must.
    pub fn from_pem_files(
        cert: &Path,
        key: &Path,
        ca: &Path,
        require_client_cert: bool,
    ) -> Result<Self, TlsError> {
        let cert_pem = read("tls-cert", cert)?;
        let key_pem = read("tls-key", key)?;
        let ca_pem = read("tls-ca", ca)?;
        Self::build(
            ServerPem {
                cert: (&cert_pem, Some(cert)),
                key: (&key_pem, Some(key)),
                ca: (&ca_pem, Some(ca)),
            },
            require_client_cert,
        )
    }

    /// [`from_pem_files`](Self::from_pem_files) from the PEM texts.
    pub fn from_pem(
        cert: &[u8],
        key: &[u8],
        ca: &[u8],
        require_client_cert: bool,
    ) -> Result<Self, TlsError> {
        Self::build(
            ServerPem {
                cert: (cert, None),
                key: (key, None),
                ca: (ca, None),
            },
            require_client_cert,
        )
    }

    fn build(pem: ServerPem<'_>, require_client_cert: bool) -> Result<Self, TlsError> {
        let chain = certs("tls-cert", pem.cert.1, pem.cert.0)?;
        let key = private_key("tls-key", pem.key.1, pem.key.0)?;
        let roots = roots(pem.ca.1, pem.ca.0)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider());
        let verifier = if require_client_cert {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        let verifier = verifier
            .build()
            .map_err(|e| TlsError::new("tls-ca", pem.ca.1, e.to_string()))?;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new("tls-cert", pem.cert.1, e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                TlsError::new(
                    "tls-key",
                    pem.key.1,
                    format!("does not go with the certificate of tls-cert: {e}"),
                )
            })?;
        let peers = ClientTls::build(roots, Some((chain, key)), pem.key.1)?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            peers,
            require_client_cert,
        })
    }

    /// Whether clients must present a certificate too.
    pub fn requires_client_cert(&self) -> bool {
        self.require_client_cert
    }

    /// How this server connects to its peers: verifying them against the
    /// CA, presenting its own certificate.
    pub fn peer_client(&self) -> &ClientTls {
        &self.peers
    }

    /// The server side of the handshake on an accepted connection. A
    /// connection that does not open with a TLS handshake (a client or
    /// peer without TLS) is refused with an error that says so.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<Stream> {
        let mut first = [0u8; 1];
        let n = stream.peek(&mut first).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the TLS handshake",
            ));
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            // Read what the caller sent before closing, so it gets an end
            // of stream rather than a reset (which would hide the cause).
            let mut drained = [0u8; 4096];
            for _ in 0..16 {
                match stream.try_read(&mut drained) {
                    Ok(n) if n > 0 => continue,
                    _ => break,
                }
            }
            let mut stream = stream;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the connection does not start a TLS handshake (a client or server without TLS?); this server accepts TLS connections only",
            ));
        }
        let tls = self.acceptor.accept(stream).await?;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))))
    }
}

/// How a client verifies the server it connects to (and, optionally, the
/// certificate it presents): see the [module](self).
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Verify servers against the CA bundle `ca` (PEM); present no
    /// certificate.
    pub fn from_ca_pem(ca: &[u8]) -> Result<Self, TlsError> {
        Self::build(roots(None, ca)?, None, None)
    }

    /// Verify servers against the CA bundle `ca` and present the
    /// certificate chain `cert` with its private key `key` (all PEM), for
    /// servers that require client certificates.
    pub fn from_pem_with_cert(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let identity = (
            certs("tls-cert", None, cert)?,
            private_key("tls-key", None, key)?,
        );
        Self::build(roots(None, ca)?, Some(identity), None)
    }

    /// Read the CA bundle (and the certificate and key to present, if
    /// given) from PEM files.
    pub fn from_pem_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, TlsError> {
        let roots = roots(Some(ca), &read("tls-ca", ca)?)?;
        match identity {
            None => Self::build(roots, None, None),
            Some((cert, key)) => {
                let chain = certs("tls-cert", Some(cert), &read("tls-cert", cert)?)?;
                let private = private_key("tls-key", Some(key), &read("tls-key", key)?)?;
                Self::build(roots, Some((chain, private)), Some(key))
            }
        }
    }

    /// Use a rustls client configuration as it is.
    pub fn from_config(config: Arc<rustls::ClientConfig>) -> Self {
        Self {
            connector: TlsConnector::from(config),
        }
    }

    fn build(
        roots: Arc<RootCertStore>,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
        key_path: Option<&Path>,
    ) -> Result<Self, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new("tls-ca", None, e.to_string()))?
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
                TlsError::new(
                    "tls-key",
                    key_path,
                    format!("does not go with the certificate of tls-cert: {e}"),
                )
            })?,
        };
        Ok(Self::from_config(Arc::new(config)))
    }

    /// The client side of the handshake on `stream`, to the server reached
    /// as `address` (`host:port`): its certificate must name `host`.
    pub async fn connect(&self, address: &str, stream: TcpStream) -> io::Result<Stream> {
        let name = server_name(address)?;
        let tls = self.connector.connect(name, stream).await?;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))))
    }
}

/// The name a server reached at `address` must have in its certificate:
/// the host part (a DNS name, or an IP address).
pub fn server_name(address: &str) -> io::Result<ServerName<'static>> {
    let host = host_of(address);
    ServerName::try_from(host.to_string()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host:?} (from {address}) is not a valid TLS server name: {e}"),
        )
    })
}

/// The host of `host:port`, `ip:port` or `[ipv6]:port` (the whole text if
/// it has no port).
pub fn host_of(address: &str) -> &str {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        // An IP literal: strip the brackets of an IPv6 address.
        let text = address.rsplit_once(':').map_or(address, |(host, _)| host);
        return match addr {
            SocketAddr::V6(_) => text.trim_start_matches('[').trim_end_matches(']'),
            SocketAddr::V4(_) => text,
        };
    }
    match address.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => {
            host.trim_start_matches('[').trim_end_matches(']')
        }
        _ => address,
    }
}

/// Open `stream` as a client: plain when `tls` is `None`, else with the
/// TLS handshake to the server reached as `address`.
pub async fn client_stream(
    tls: Option<&ClientTls>,
    address: &str,
    stream: TcpStream,
) -> io::Result<Stream> {
    match tls {
        None => Ok(Stream::Plain(stream)),
        Some(tls) => tls.connect(address, stream).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("127.0.0.1:5700"), "127.0.0.1");
        assert_eq!(host_of("[::1]:5700"), "::1");
        assert_eq!(host_of("db.example:5700"), "db.example");
        assert_eq!(host_of("localhost"), "localhost");
        assert!(matches!(
            server_name("127.0.0.1:5700").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("localhost:5700").unwrap(),
            ServerName::DnsName(_)
        ));
    }

    fn self_signed(sans: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn files_that_do_not_fit_are_refused_naming_the_key_and_the_file() {
        let dir = std::env::temp_dir().join(format!("copycat-tls-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = self_signed(&["127.0.0.1"]);
        let (_, other_key) = self_signed(&["127.0.0.1"]);
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let cert_file = write("cert.pem", &cert);
        let key_file = write("key.pem", &key);
        let ca_file = write("ca.pem", &cert);
        assert!(ServerTls::from_pem_files(&cert_file, &key_file, &ca_file, false).is_ok());
        assert!(ClientTls::from_pem_files(&ca_file, Some((&cert_file, &key_file))).is_ok());

        // A key that is not the certificate's.
        let wrong_key = write("wrong-key.pem", &other_key);
        let error = ServerTls::from_pem_files(&cert_file, &wrong_key, &ca_file, false).unwrap_err();
        assert_eq!(error.key, "tls-key");
        assert!(error.to_string().contains("wrong-key.pem"), "{error}");
        assert!(error.detail.contains("does not go with"), "{error}");

        // A certificate where the key should be, and garbage as the CA.
        let error = ServerTls::from_pem_files(&cert_file, &cert_file, &ca_file, false).unwrap_err();
        assert_eq!(error.key, "tls-key");
        assert!(error.detail.contains("no private key"), "{error}");
        let garbage = write("garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64!\n");
        let error = ServerTls::from_pem_files(&cert_file, &key_file, &garbage, false).unwrap_err();
        assert_eq!(error.key, "tls-ca");
        assert!(error.to_string().contains("garbage.pem"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_pem_is_named() {
        let error = ServerTls::from_pem(b"not pem", b"", b"", false).unwrap_err();
        assert_eq!(error.key, "tls-cert");
        assert!(error.detail.contains("no certificate"), "{error}");
        let dir = std::env::temp_dir().join(format!("copycat-tls-missing-{}", std::process::id()));
        let error = ServerTls::from_pem_files(
            &dir.join("c.pem"),
            &dir.join("k.pem"),
            &dir.join("ca.pem"),
            false,
        )
        .unwrap_err();
        assert_eq!(error.key, "tls-cert");
        assert!(error.to_string().contains("c.pem: cannot read"), "{error}");
    }
}
