//! `--runtime per-core`: the listeners served by one current-thread runtime per worker
//! thread, each accepting on its own `SO_REUSEPORT` socket of the HTTP (and, once a TLS route
//! exists, the HTTPS) address, all sharing one [`DataPlane`] (live snapshot, upstream pools,
//! backend registry, metrics) and one [`Edge`] (so `--max-connections` caps them together).
//! A connection is accepted, served and proxied on one thread: no work stealing, no
//! cross-thread wake-ups on the request path. The controller, the admin server and the
//! shutdown sequence stay on the main thread's runtime.
//!
//! Resources made on one runtime may be used from another: a pooled upstream connection
//! (and, for pools that drive a connection with a task, that task) belongs to the runtime
//! that opened it, and the Redis driver to the main one. A runtime only goes away once every
//! runtime has drained and the process is about to exit ([`Workers::release`]), so such a
//! connection never loses its runtime while a request uses it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use weir_dataplane::DataPlane;
use weir_dataplane::listener::{Edge, ListenerOptions, PlainListener, TlsListener, bind_reuseport};

/// How long [`Workers::release`] waits for the worker threads to end.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The worker threads, kept running until [`Workers::release`].
#[derive(Debug)]
pub struct Workers {
    release: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Lets the worker runtimes (drained by then) end, and waits (at most
    /// [`JOIN_TIMEOUT`]) for their threads. Call it last: until then their runtimes keep
    /// driving what other runtimes may still use (upstream connections, WebSocket tunnels).
    pub async fn release(self) {
        let _ = self.release.send(true);
        let threads = self.threads;
        let join = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        if tokio::time::timeout(JOIN_TIMEOUT, join).await.is_err() {
            tracing::warn!("listener workers did not stop within {JOIN_TIMEOUT:?}; exiting anyway");
        }
    }
}

/// Binds the HTTP address once per worker (`SO_REUSEPORT`).
pub fn bind_http(addr: SocketAddr, workers: usize) -> anyhow::Result<Vec<std::net::TcpListener>> {
    bind_reuseport(addr, workers).with_context(|| format!("binding --http-addr {addr}"))
}

/// Starts one worker thread per socket of `http`, each serving its HTTP socket at once and
/// its HTTPS socket on `https_addr` from the first snapshot with a certificate, until `stop`
/// turns true. The task ends once every worker has drained, or with an error as soon as
/// one fails (its thread ended, its runtime could not start).
pub fn spawn(
    dataplane: Arc<DataPlane>,
    options: ListenerOptions,
    http: Vec<std::net::TcpListener>,
    https_addr: SocketAddr,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(JoinHandle<anyhow::Result<()>>, Workers)> {
    dataplane.set_https_port(https_addr.port());
    let edge = Edge::new(dataplane, options);
    let (release, released) = watch::channel(false);
    let mut https_sockets = Vec::new();
    let mut drained = Vec::new();
    let mut threads = Vec::new();
    for (i, http) in http.into_iter().enumerate() {
        let (https_tx, https_rx) = oneshot::channel();
        let (drained_tx, drained_rx) = oneshot::channel();
        https_sockets.push(https_tx);
        drained.push(drained_rx);
        let worker = Worker {
            edge: Arc::clone(&edge),
            http,
            https: https_rx,
            stop: stop.clone(),
            released: released.clone(),
            drained: drained_tx,
        };
        let thread = std::thread::Builder::new()
            .name(format!("weir-worker-{i}"))
            .spawn(move || {
                // Pooled upstream connections stay with the runtime that opened them.
                weir_dataplane::upstream::pool::set_pool_worker(i as u32 + 1);
                worker.run()
            })
            .with_context(|| format!("starting listener worker {i}"))?;
        threads.push(thread);
    }
    tracing::info!(workers = threads.len(), "listeners served by one runtime per worker thread");
    tokio::spawn(bind_https(edge, https_addr, https_sockets, stop));
    let task = tokio::spawn(all_drained(drained));
    Ok((task, Workers { release, threads }))
}

/// Ends once every worker reported drained, or with the first failure: a worker that
/// reported one, or whose thread ended without a report (it panicked).
async fn all_drained(workers: Vec<oneshot::Receiver<anyhow::Result<()>>>) -> anyhow::Result<()> {
    let reports = workers.into_iter().enumerate().map(|(i, drained)| async move {
        match drained.await {
            Ok(result) => result.with_context(|| format!("listener worker {i}")),
            Err(_) => Err(anyhow::anyhow!("listener worker {i} stopped (its thread ended)")),
        }
    });
    futures_util::future::try_join_all(reports).await?;
    Ok(())
}

/// One worker thread's part.
struct Worker {
    edge: Arc<Edge>,
    http: std::net::TcpListener,
    https: oneshot::Receiver<std::net::TcpListener>,
    stop: watch::Receiver<bool>,
    released: watch::Receiver<bool>,
    drained: oneshot::Sender<anyhow::Result<()>>,
}

impl Worker {
    /// Runs the worker's runtime: serves until `stop`, reports drained, then waits to be
    /// released.
    fn run(self) {
        let Worker { edge, http, https, stop, mut released, drained } = self;
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = drained.send(Err(anyhow::Error::new(e).context("starting its runtime")));
                return;
            }
        };
        runtime.block_on(async move {
            let http = match TcpListener::from_std(http) {
                Ok(http) => http,
                Err(e) => {
                    let _ = drained.send(Err(anyhow::Error::new(e).context("its HTTP socket")));
                    return;
                }
            };
            let https = tokio::spawn(serve_https(Arc::clone(&edge), https, stop.clone()));
            let mut plain_stop = stop;
            PlainListener::new(http)
                .serve(edge, async move {
                    let _ = plain_stop.wait_for(|stop| *stop).await;
                })
                .await;
            if let Err(e) = https.await {
                tracing::warn!("HTTPS listener task: {e}");
            }
            let _ = drained.send(Ok(()));
            // Until every runtime has drained and the process is done with them.
            let _ = released.wait_for(|released| *released).await;
        });
    }
}

/// Serves the HTTPS socket it is handed (none: no TLS route yet, or the bind failed) until
/// `stop`.
async fn serve_https(
    edge: Arc<Edge>,
    socket: oneshot::Receiver<std::net::TcpListener>,
    mut stop: watch::Receiver<bool>,
) {
    let socket = tokio::select! {
        socket = socket => match socket {
            Ok(socket) => socket,
            Err(_) => return,
        },
        _ = stop.wait_for(|stop| *stop) => return,
    };
    let tcp = match TcpListener::from_std(socket) {
        Ok(tcp) => tcp,
        Err(error) => {
            tracing::error!(%error, "registering an HTTPS socket failed: this worker serves no HTTPS");
            return;
        }
    };
    TlsListener::new(tcp)
        .serve(edge, async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await;
}

/// Once the live snapshot first has a certificate, binds `addr` once per worker
/// (`SO_REUSEPORT`) and hands each worker its socket. A bind failure is logged; plain HTTP
/// keeps serving.
async fn bind_https(
    edge: Arc<Edge>,
    addr: SocketAddr,
    workers: Vec<oneshot::Sender<std::net::TcpListener>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut wanted = edge.dataplane().tls_wanted();
    tokio::select! {
        needed = wanted.wait_for(|wanted| *wanted) => if needed.is_err() { return },
        _ = stop.wait_for(|stop| *stop) => return,
    }
    let sockets = match bind_reuseport(addr, workers.len()) {
        Ok(sockets) => sockets,
        Err(error) => {
            tracing::error!(
                https_addr = %addr, %error,
                "binding --https-addr failed: HTTPS routes are not served (plain HTTP still is)"
            );
            return;
        }
    };
    match sockets.first().map(std::net::TcpListener::local_addr) {
        Some(Ok(bound)) => {
            tracing::info!(https = %bound, "HTTPS listener bound (a TLS route exists)")
        }
        _ => tracing::info!(https = %addr, "HTTPS listener bound (a TLS route exists)"),
    }
    for (worker, socket) in workers.into_iter().zip(sockets) {
        let _ = worker.send(socket);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use weir_dataplane::Snapshot;

    use super::*;

    const BOUND: Duration = Duration::from_secs(10);

    async fn get(addr: SocketAddr) -> Vec<u8> {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(BOUND, stream.read_to_end(&mut answer)).await.unwrap().unwrap();
        answer
    }

    #[tokio::test]
    async fn every_worker_serves_until_stop_then_drains_and_is_released() {
        let dataplane = DataPlane::new();
        dataplane.publish(Snapshot { version: 1, ..Snapshot::empty() });
        let http = bind_http("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = http[0].local_addr().unwrap();
        let https = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        let (task, workers) =
            spawn(Arc::clone(&dataplane), ListenerOptions::default(), http, https, rx).unwrap();
        assert_eq!(workers.threads.len(), 2);
        for _ in 0..20 {
            let answer = get(addr).await;
            assert!(answer.starts_with(b"HTTP/1.1 404"), "{}", String::from_utf8_lossy(&answer));
        }
        assert!(!task.is_finished());
        stop.send(true).unwrap();
        tokio::time::timeout(BOUND, task).await.expect("workers did not drain").unwrap().unwrap();
        // Drained: nobody accepts any more.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
        workers.release().await;
    }

    /// The listening TCP sockets on `port`, from `/proc/net/tcp`.
    fn listening_on(port: u16) -> usize {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let port = format!(":{port:04X}");
        table
            .lines()
            .skip(1)
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 3 && fields[1].ends_with(&port) && fields[3] == "0A"
            })
            .count()
    }

    #[tokio::test]
    async fn the_https_sockets_are_bound_once_a_certificate_is_live_one_per_worker() {
        let dataplane = DataPlane::new();
        let http = bind_http("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let https = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        let (task, workers) =
            spawn(Arc::clone(&dataplane), ListenerOptions::default(), http, https, rx).unwrap();
        assert_eq!(dataplane.https_port(), https.port());
        dataplane.publish(Snapshot { version: 1, ..Snapshot::empty() });
        assert_eq!(listening_on(https.port()), 0, "bound without a certificate");
        dataplane.publish(crate::serving::tests::with_certificate(2));
        let bound = async {
            while listening_on(https.port()) < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(BOUND, bound).await.expect("HTTPS sockets never bound");
        assert_eq!(listening_on(https.port()), 2);
        // Both accept: TLS handshakes answered (and failing: the client sends garbage) on
        // every connection, whichever socket the kernel chose.
        for _ in 0..16 {
            let mut stream = tokio::net::TcpStream::connect(https).await.unwrap();
            stream.write_all(b"not a TLS ClientHello").await.unwrap();
            let mut answer = Vec::new();
            tokio::time::timeout(BOUND, stream.read_to_end(&mut answer))
                .await
                .expect("a connection was never served")
                .ok();
        }
        stop.send(true).unwrap();
        tokio::time::timeout(BOUND, task).await.expect("workers did not drain").unwrap().unwrap();
        assert_eq!(listening_on(https.port()), 0);
        workers.release().await;
    }

    #[tokio::test]
    async fn a_worker_that_fails_or_dies_fails_the_listeners_by_name_at_once() {
        let (ok, ok_rx) = oneshot::channel();
        let (failed, failed_rx) = oneshot::channel::<anyhow::Result<()>>();
        let (_running, running_rx) = oneshot::channel();
        let all = tokio::spawn(all_drained(vec![ok_rx, failed_rx, running_rx]));
        ok.send(Ok(())).unwrap();
        failed.send(Err(anyhow::anyhow!("its HTTP socket: boom"))).unwrap();
        // Worker 2 still runs: the failure of worker 1 is reported without waiting for it.
        let error = tokio::time::timeout(BOUND, all).await.unwrap().unwrap().unwrap_err();
        assert_eq!(format!("{error:#}"), "listener worker 1: its HTTP socket: boom");

        let (ok, ok_rx) = oneshot::channel();
        let (dead, dead_rx) = oneshot::channel::<anyhow::Result<()>>();
        let all = tokio::spawn(all_drained(vec![ok_rx, dead_rx]));
        drop(dead);
        ok.send(Ok(())).unwrap();
        let error = tokio::time::timeout(BOUND, all).await.unwrap().unwrap().unwrap_err();
        assert_eq!(format!("{error:#}"), "listener worker 1 stopped (its thread ended)");

        let (ok, ok_rx) = oneshot::channel();
        let all = tokio::spawn(all_drained(vec![ok_rx]));
        ok.send(Ok(())).unwrap();
        tokio::time::timeout(BOUND, all).await.unwrap().unwrap().unwrap();
    }
}
