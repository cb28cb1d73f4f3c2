//! The TLS handshake of the HTTPS listener: the ClientHello is read first, the live
//! snapshot's [`TlsTable`](crate::tls::TlsTable) picks the certificate for its SNI, and the
//! handshake finishes with that certificate's ready server config. Nothing is parsed or
//! looked up by name here; a new snapshot (a rotated certificate) applies to the next
//! handshake, and open connections keep the config they started with.

use std::sync::Arc;

use rustls::server::Acceptor;
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use crate::server::DataPlane;
use crate::tls::{TlsInfo, subject_of};

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// Reading the ClientHello failed (not TLS, an unsupported version, a reset).
    #[error("reading the ClientHello: {0}")]
    Hello(std::io::Error),
    /// No certificate for the SNI and no default certificate.
    #[error("no certificate for SNI {0:?}")]
    NoCertificate(Option<String>),
    /// The rest of the handshake failed.
    #[error("handshake: {0}")]
    Handshake(std::io::Error),
}

/// A finished handshake.
pub(crate) struct Accepted {
    pub stream: TlsStream<TcpStream>,
    /// ALPN chose `h2`.
    pub h2: bool,
    pub info: TlsInfo,
}

/// Runs the server side of a handshake on `stream`, with the certificate the live snapshot
/// selects for the client's SNI.
pub(crate) async fn handshake(
    stream: TcpStream,
    dataplane: &DataPlane,
) -> Result<Accepted, HandshakeError> {
    let start = LazyConfigAcceptor::new(Acceptor::default(), stream)
        .await
        .map_err(HandshakeError::Hello)?;
    let hello = start.client_hello();
    let sni: Option<Box<str>> = hello.server_name().map(|s| s.to_ascii_lowercase().into());
    let snapshot = dataplane.current();
    let Some(host) = snapshot.tls.select(sni.as_deref()).map(Arc::clone) else {
        return Err(HandshakeError::NoCertificate(sni.map(String::from)));
    };
    drop(snapshot);
    let stream =
        start.into_stream(Arc::clone(&host.config)).await.map_err(HandshakeError::Handshake)?;
    let (_, conn) = stream.get_ref();
    let h2 = conn.alpn_protocol() == Some(b"h2".as_slice());
    // rustls exposes peer certificates only once they were verified by the config's
    // client-certificate verifier.
    let client_cert_subject = conn
        .peer_certificates()
        .and_then(<[_]>::first)
        .and_then(subject_of)
        .and_then(|s| http::HeaderValue::from_str(&s).ok());
    let info = TlsInfo { certificate: Some(Arc::clone(&host.name)), sni, client_cert_subject };
    Ok(Accepted { stream, h2, info })
}
