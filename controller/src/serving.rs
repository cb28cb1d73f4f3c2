//! The data plane's listeners in `weir run` (both modes): the plain listener from the
//! start, the HTTPS listener once a TLS route exists, and the shutdown sequence
//! (`--shutdown-delay`: not ready at once, keep serving for the delay, then drain).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_dataplane::DataPlane;
use weir_dataplane::listener::{Edge, ListenerOptions, PlainListener, TlsListener};

use crate::cli::RunArgs;
use crate::publish::Shared;

/// The listener options of `args` (`--max-connections`, `--header-read-timeout`,
/// `--idle-timeout`).
pub fn listener_options(args: &RunArgs) -> ListenerOptions {
    ListenerOptions {
        max_connections: args.max_connections.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        header_read_timeout: args.header_read_timeout,
        idle_timeout: (!args.idle_timeout.is_zero()).then_some(args.idle_timeout),
    }
}

/// Serves the plain listener `http` at once and the HTTPS listener on `https_addr` from the
/// first snapshot with a certificate, both until `stop` turns true; the task ends once
/// both have drained.
pub fn spawn(
    dataplane: Arc<DataPlane>,
    options: ListenerOptions,
    http: TcpListener,
    https_addr: SocketAddr,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    dataplane.set_https_port(https_addr.port());
    let edge = Edge::new(dataplane, options);
    let https = tokio::spawn(serve_https(Arc::clone(&edge), https_addr, stop.clone()));
    let mut plain_stop = stop;
    tokio::spawn(async move {
        PlainListener::new(http)
            .serve(edge, async move {
                let _ = plain_stop.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(e) = https.await {
            tracing::warn!("HTTPS listener task: {e}");
        }
    })
}

/// Binds `addr` once the live snapshot first has a certificate (then keeps it bound) and
/// serves HTTPS on it until `stop`. A bind failure is logged; plain HTTP keeps serving.
async fn serve_https(edge: Arc<Edge>, addr: SocketAddr, mut stop: watch::Receiver<bool>) {
    let mut wanted = edge.dataplane().tls_wanted();
    let needed = async { wanted.wait_for(|wanted| *wanted).await.is_ok() };
    let stopped = async { stop.wait_for(|stop| *stop).await.map(|_| ()) };
    tokio::select! {
        needed = needed => if !needed { return },
        _ = stopped => return,
    }
    let tcp = match TcpListener::bind(addr).await {
        Ok(tcp) => tcp,
        Err(error) => {
            tracing::error!(
                https_addr = %addr, %error,
                "binding --https-addr failed: HTTPS routes are not served (plain HTTP still is)"
            );
            return;
        }
    };
    match tcp.local_addr() {
        Ok(bound) => tracing::info!(https = %bound, "HTTPS listener bound (a TLS route exists)"),
        Err(_) => tracing::info!(https = %addr, "HTTPS listener bound (a TLS route exists)"),
    }
    TlsListener::new(tcp)
        .serve(edge, async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await;
}

/// After SIGTERM/SIGINT: `/readyz` turns 503 at once, then the listeners keep serving for
/// `delay` (so load balancers stop sending new traffic first); a second signal ends the
/// wait early. The caller then stops the listeners, which drain.
pub async fn shutdown_delay(shared: &Shared, delay: Duration) {
    shared.set_draining();
    if delay.is_zero() {
        return;
    }
    tracing::info!(?delay, "not ready; serving until the shutdown delay ends");
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = crate::cli::shutdown_signal() => tracing::info!("second signal: ending the shutdown delay"),
    }
}

/// How long shutdown waits for upgraded connections to end once they are told to close.
pub const UPGRADED_CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Closes the upgraded (WebSocket) connections, which the listeners' drain leaves open, and
/// waits (at most [`UPGRADED_CLOSE_TIMEOUT`]) until their tunnels ended.
pub async fn close_upgraded(dataplane: &weir_dataplane::DataPlane) {
    let upgrades = dataplane.upstream.upgrades();
    upgrades.close();
    if tokio::time::timeout(UPGRADED_CLOSE_TIMEOUT, upgrades.closed()).await.is_err() {
        tracing::warn!("upgraded connections still open after the close timeout; exiting anyway");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use weir_dataplane::Snapshot;
    use weir_dataplane::tls::{HostTls, TlsTable};

    use super::*;

    const BOUND: Duration = Duration::from_secs(10);

    /// A snapshot (version `version`) whose default certificate is a fresh self-signed one for
    /// `a.example.com` (also used by `cli::per_core`'s tests).
    pub(crate) fn with_certificate(version: u64) -> Snapshot {
        let cert = rcgen::generate_simple_self_signed(vec!["a.example.com".to_owned()]).unwrap();
        let host = HostTls::from_pem(
            "default/a".into(),
            cert.cert.pem().as_bytes(),
            cert.signing_key.serialize_pem().as_bytes(),
            None,
            std::time::SystemTime::now(),
        )
        .unwrap();
        Snapshot {
            version,
            tls: Arc::new(TlsTable::new(vec![], Some(Arc::new(host)))),
            ..Snapshot::empty()
        }
    }

    async fn free_addr() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap()
    }

    async fn wait_bound(addr: SocketAddr) {
        let bound = async {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(BOUND, bound).await.expect("HTTPS listener never bound");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_https_listener_is_bound_once_a_certificate_is_live_and_stays_bound() {
        let dataplane = DataPlane::new();
        let https = free_addr().await;
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, rx) = watch::channel(false);
        let task = spawn(Arc::clone(&dataplane), ListenerOptions::default(), http, https, rx);
        assert_eq!(dataplane.https_port(), https.port());
        dataplane.publish(Snapshot { version: 1, ..Snapshot::empty() });
        assert!(
            tokio::net::TcpStream::connect(https).await.is_err(),
            "bound without a certificate"
        );
        dataplane.publish(with_certificate(2));
        wait_bound(https).await;
        // The last certificate removed: the listener stays (handshakes then fail).
        dataplane.publish(Snapshot { version: 3, ..Snapshot::empty() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(tokio::net::TcpStream::connect(https).await.is_ok());
        stop.send(true).unwrap();
        tokio::time::timeout(BOUND, task).await.expect("listeners did not stop").unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_https_bind_failure_leaves_plain_http_serving() {
        let dataplane = DataPlane::new();
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let https = taken.local_addr().unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        let task = spawn(Arc::clone(&dataplane), ListenerOptions::default(), http, https, rx);
        dataplane.publish(with_certificate(1));
        // Plain HTTP keeps answering (404: no route) while HTTPS could not bind.
        for _ in 0..3 {
            let mut stream = tokio::net::TcpStream::connect(http_addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream
                .write_all(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            tokio::time::timeout(BOUND, stream.read_to_end(&mut answer)).await.unwrap().unwrap();
            assert!(answer.starts_with(b"HTTP/1.1 404"), "{}", String::from_utf8_lossy(&answer));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(true).unwrap();
        tokio::time::timeout(BOUND, task).await.expect("listeners did not stop").unwrap();
        drop(taken);
    }
}
