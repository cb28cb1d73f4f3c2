//! The HTTP/1.1 pool's idle connections over real loopback sockets: a connection the
//! upstream closes while idle gives back its backend slot with no request to notice it
//! (plain and TLS, on the work-stealing runtime and on a per-core worker's), and a per-core
//! worker's own connections (reuse, `maxIdlePerEndpoint`, `idleTimeout`, its runtime's
//! end).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::testing::{Ca, eventually, server_config};
use super::*;
use crate::upstream::tls::TlsRoots;

const BOUND: Duration = Duration::from_secs(10);
const CONNECT: Duration = Duration::from_secs(5);
const HOST: &str = "orders.internal";

/// A keep-alive origin on loopback (plain, or TLS with a certificate for [`HOST`]) that
/// answers every request `200 ok`, and closes all its connections, idle ones included,
/// when told to ([`ClosingOrigin::close_all`]); after that, new connections are served
/// again.
struct ClosingOrigin {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    close: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Drop for ClosingOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ClosingOrigin {
    async fn start(tls: Option<&Ca>) -> ClosingOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (close, closed) = watch::channel(0u64);
        let acceptor =
            tls.map(|ca| TlsAcceptor::from(server_config(&ca.leaf(&[HOST]), None, &[b"http/1.1"])));
        let count = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let mut closed = closed.clone();
                closed.mark_unchanged();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        None => serve(stream, closed).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(stream, closed).await;
                            }
                        }
                    }
                });
            }
        });
        ClosingOrigin { addr, accepted, close, task }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every connection open now.
    fn close_all(&self) {
        self.close.send_modify(|n| *n += 1);
    }
}

/// Answers requests on `stream` until the peer closes it or `closed` changes.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, mut closed: watch::Receiver<u64>) {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::select! {
            n = stream.read(&mut chunk) => n,
            _ = closed.changed() => return,
        };
        let Ok(n @ 1..) = n else { return };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    }
}

fn transport(
    ca: Option<&Ca>,
    count: &Arc<ConnectionCount>,
    settings: ConnectionSettings,
) -> Transport {
    let tls = ca.map(|ca| {
        let tls = UpstreamTls::new(
            TlsRoots::Pem(ca.pem().as_bytes()),
            HOST,
            None,
            UpstreamProtocol::Http1,
        )
        .unwrap();
        Arc::new(tls)
    });
    Transport { tls, connection: settings, connections: Some(Arc::clone(count)) }
}

fn settings(max_idle: usize, idle_timeout: Duration) -> ConnectionSettings {
    ConnectionSettings { max_idle_per_endpoint: max_idle, idle_timeout }
}

async fn get(upstream: &Upstream, addr: SocketAddr, transport: &Transport) -> Response<PooledBody> {
    let request = Request::get("/").header("host", HOST).body(UpstreamBody::Empty).unwrap();
    let attempt =
        upstream.request(addr, transport, CONNECT, request, Via::Pooled, std::time::Instant::now());
    match tokio::time::timeout(BOUND, attempt).await.expect("request hung") {
        Ok(response) => response,
        Err(AttemptError::Connect(e, _)) => panic!("connect failed: {e}"),
        Err(AttemptError::Exchange(e)) => panic!("exchange failed: {e}"),
    }
}

/// One request, its body read to the end (the connection goes back to the pool).
async fn ok(upstream: &Upstream, addr: SocketAddr, transport: &Transport) {
    let response = get(upstream, addr, transport).await;
    let body = tokio::time::timeout(BOUND, response.into_body().collect()).await.unwrap().unwrap();
    assert_eq!(body.to_bytes(), "ok");
}

/// An idle connection the origin closes gives back its slot with no request made, then a
/// new connection is made for the next request.
async fn closed_while_idle(ca: Option<&Ca>) {
    let origin = ClosingOrigin::start(ca).await;
    let upstream = Upstream::default();
    let count = Arc::new(ConnectionCount::new(Some(4), None));
    let transport = transport(ca, &count, settings(8, Duration::from_secs(60)));

    ok(&upstream, origin.addr, &transport).await;
    ok(&upstream, origin.addr, &transport).await;
    assert_eq!(origin.accepted(), 1, "the idle connection is reused");
    assert_eq!((count.open(), upstream.pool().idle_count(origin.addr)), (1, 1));

    origin.close_all();
    eventually("the closed idle connection gives back its slot", || count.open() == 0).await;
    assert_eq!(upstream.pool().idle_count(origin.addr), 0);

    ok(&upstream, origin.addr, &transport).await;
    assert_eq!(origin.accepted(), 2);
    assert_eq!(count.open(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_the_upstream_closes_gives_back_its_slot_without_a_request() {
    closed_while_idle(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tls_connection_the_upstream_closes_gives_back_its_slot_without_a_request() {
    closed_while_idle(Some(&Ca::new("upstream ca"))).await;
}

/// `f` on a new thread marked as per-core worker `worker`, in its own current-thread
/// runtime (as `weir run --runtime per-core` runs its workers); the thread ends after.
fn on_worker<F, Fut>(worker: u32, f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let thread = std::thread::spawn(move || {
        set_pool_worker(worker);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(f());
    });
    thread.join().expect("the worker thread panicked");
}

#[test]
fn a_per_core_worker_closed_idle_connections_give_back_their_slot_without_a_request() {
    on_worker(7, || async {
        closed_while_idle(None).await;
        closed_while_idle(Some(&Ca::new("upstream ca"))).await;
    });
}

#[test]
fn a_per_core_worker_reuses_only_its_own_idle_connections_as_its_settings_say() {
    let count = Arc::new(ConnectionCount::new(Some(8), None));
    let upstream = Arc::new(Upstream::default());
    // The origin runs on a runtime of its own, outliving the worker's.
    let origin_runtime = tokio::runtime::Runtime::new().unwrap();
    let origin = origin_runtime.block_on(ClosingOrigin::start(None));
    let (addr, accepted) = (origin.addr, Arc::clone(&origin.accepted));
    let (worker_count, worker_upstream) = (Arc::clone(&count), Arc::clone(&upstream));

    on_worker(3, move || async move {
        let (count, upstream) = (worker_count, worker_upstream);
        let accepted = || accepted.load(Ordering::SeqCst);
        let one = transport(None, &count, settings(1, Duration::from_secs(60)));

        // Two at once: both connections made; only one kept idle afterwards.
        let (a, b) = tokio::join!(get(&upstream, addr, &one), get(&upstream, addr, &one));
        assert_eq!(count.open(), 2);
        drop(a.into_body().collect().await.unwrap());
        drop(b.into_body().collect().await.unwrap());
        assert_eq!(upstream.pool().idle_count(addr), 1, "maxIdlePerEndpoint 1");
        assert_eq!(count.open(), 1, "the connection not kept gave back its slot");

        // Kept for this worker: another thread does not take it.
        let (seen, made) = std::thread::scope(|s| {
            s.spawn(|| {
                let other =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let seen = upstream.pool().idle_count(addr);
                let before = accepted();
                other.block_on(ok(&upstream, addr, &one));
                (seen, accepted() - before)
            })
            .join()
            .unwrap()
        });
        assert_eq!(seen, 1, "this worker's idle connection");
        assert_eq!(made, 1, "another thread makes a connection of its own");
        // That thread's runtime is gone: its idle connection was woken by the runtime's
        // shutdown and let go.
        eventually("the other runtime's connection is let go", || count.open() == 1).await;

        // Reused here.
        let before = accepted();
        ok(&upstream, addr, &one).await;
        assert_eq!(accepted(), before, "this worker's idle connection is reused");

        // An idle timeout of 10 ms: after 50 ms the idle connection is not reused.
        let short = transport(None, &count, settings(8, Duration::from_millis(10)));
        ok(&upstream, addr, &short).await;
        assert_eq!(accepted(), before);
        tokio::time::sleep(Duration::from_millis(50)).await;
        ok(&upstream, addr, &short).await;
        assert_eq!(accepted(), before + 1, "an expired idle connection is not reused");
        assert_eq!(upstream.pool().idle_count(addr), 1, "the expired one was dropped");
        assert_eq!(count.open(), 1);
    });
    // The worker's runtime shut down with an idle connection in the pool: let go then, its
    // slot given back.
    assert_eq!(count.open(), 0, "the worker's idle connections closed with its runtime");
    assert_eq!(upstream.pool().idle_count(addr), 0);
    drop(origin);
    drop(origin_runtime);
}
