//! Listening sockets that share one port (`SO_REUSEPORT`), one per runtime in the per-core
//! mode of `weir run`: the kernel spreads new connections over the sockets (by a hash of
//! the connection's addresses), so each runtime accepts and serves its own connections
//! without handing them to another thread.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpSocket;

/// The accept backlog of each socket (what `tokio::net::TcpListener::bind` uses).
const BACKLOG: u32 = 1024;

/// Binds `count` (at least one) listening sockets on `addr` with `SO_REUSEPORT` (and
/// `SO_REUSEADDR`, as `tokio::net::TcpListener::bind` sets). With port 0 the first socket's
/// port is used for the others. The sockets are non-blocking standard ones, to be
/// registered with [`tokio::net::TcpListener::from_std`] on the runtime that serves them.
/// Must be called within a tokio runtime.
///
/// Any process of the same user that also sets `SO_REUSEPORT` can bind the same port (and
/// receive a share of its connections), as with nginx's `reuseport`; a port already bound
/// without it is refused as usual.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut sockets = Vec::with_capacity(count.max(1));
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(BACKLOG)?;
        addr = listener.local_addr()?;
        sockets.push(listener.into_std()?);
    }
    Ok(sockets)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    #[tokio::test]
    async fn every_socket_shares_the_port_and_together_they_accept_every_connection() {
        let sockets = bind_reuseport("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        assert_eq!(sockets.len(), 2);
        let addr = sockets[0].local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert_eq!(sockets[1].local_addr().unwrap(), addr);
        let listeners: Vec<TcpListener> =
            sockets.into_iter().map(|s| TcpListener::from_std(s).unwrap()).collect();
        // Each listener answers with its index; every connection is answered by one of
        // them (which one is the kernel's choice).
        let mut servers = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            servers.push(tokio::spawn(async move {
                loop {
                    let (mut stream, _) = listener.accept().await.unwrap();
                    stream.write_all(&[b'0' + i as u8]).await.unwrap();
                }
            }));
        }
        let mut seen = [0usize; 2];
        for _ in 0..64 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let mut byte = [0u8; 1];
            tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut byte))
                .await
                .expect("no answer")
                .unwrap();
            seen[usize::from(byte[0] - b'0')] += 1;
        }
        assert_eq!(seen[0] + seen[1], 64);
        // The kernel hashes each connection's addresses: 64 connections from as many
        // source ports all landing on one socket would mean the port is not shared (odds
        // of 2^-63 otherwise).
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
        for server in servers {
            server.abort();
        }
    }

    #[tokio::test]
    async fn a_port_bound_without_reuseport_is_refused() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let error = bind_reuseport(taken.local_addr().unwrap(), 2).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    }
}
