//! The plain listener's hardening against real sockets: slowloris, the connection cap,
//! the idle timeout, malformed requests (400, also a broken chunked body), oversized heads.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weir_dataplane::listener::{Edge, ListenerOptions, PlainListener};
use weir_dataplane::{Backend, DataPlane, Snapshot};

/// Every wait in these tests is bounded by this (never asserted as a duration).
const BOUND: Duration = Duration::from_secs(10);

/// A plain listener with `options` on 127.0.0.1:0, stopped when dropped.
struct Plain {
    addr: SocketAddr,
    dataplane: Arc<DataPlane>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Plain {
    async fn start(snapshot: Snapshot, options: ListenerOptions) -> Plain {
        let dataplane = DataPlane::new();
        dataplane.publish(snapshot);
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let edge = Edge::new(Arc::clone(&dataplane), options);
        let task = tokio::spawn(PlainListener::new(tcp).serve(edge, async {
            let _ = rx.await;
        }));
        Plain { addr, dataplane, stop: Some(stop), task }
    }
}

impl Drop for Plain {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

fn one_route(origin: SocketAddr) -> Snapshot {
    snapshot(
        1,
        vec![route("r", &[], vec![rule("r", "/", action(&[(0, 1)]))])],
        vec![Backend::new(key("a"), vec![origin])],
    )
}

fn options(header_ms: u64, idle_ms: Option<u64>, max: Option<usize>) -> ListenerOptions {
    ListenerOptions {
        max_connections: max,
        header_read_timeout: Duration::from_millis(header_ms),
        idle_timeout: idle_ms.map(Duration::from_millis),
    }
}

/// Reads until the peer closes (true) or `BOUND` passes (false); the bytes read go to `out`.
async fn read_until_closed(stream: &mut TcpStream, out: &mut Vec<u8>) -> bool {
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(BOUND, read).await.is_ok()
}

/// Sends `raw` and reads one response head and its `content-length` body.
async fn exchange(stream: &mut TcpStream, raw: &[u8]) -> String {
    stream.write_all(raw).await.unwrap();
    let read = async {
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&text));
            text.extend_from_slice(&buf[..n]);
            let s = String::from_utf8_lossy(&text).into_owned();
            if let Some(end) = s.find("\r\n\r\n") {
                let length = s[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if text.len() >= end + 4 + length {
                    return s;
                }
            }
        }
    };
    tokio::time::timeout(BOUND, read).await.expect("no response")
}

fn status_of(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_off_after_the_header_read_timeout() {
    let origin = Origin::start("a").await;
    let gw = Plain::start(one_route(origin.addr), options(300, Some(60_000), None)).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    // Trickle one header line every 100 ms, for far longer than the timeout.
    let trickle = async {
        for i in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let line = format!("x-slow-{i}: 1\r\n");
            if stream.write_all(line.as_bytes()).await.is_err() {
                return true;
            }
            let mut probe = [0u8; 1];
            // A closed connection reads 0 at once.
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await
            {
                return true;
            }
        }
        false
    };
    assert!(trickle.await, "the trickled head was never cut off");
    assert_eq!(origin.requests.load(std::sync::atomic::Ordering::SeqCst), 0);

    // A client that connects and sends nothing is closed as well.
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    let mut out = Vec::new();
    assert!(read_until_closed(&mut silent, &mut out).await, "silent connection kept open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_past_the_cap_and_admits_again_once_one_closes() {
    let origin = Origin::start("a").await;
    let gw = Plain::start(one_route(origin.addr), options(10_000, Some(60_000), Some(2))).await;
    let request = b"GET / HTTP/1.1\r\nhost: a.test\r\n\r\n";
    let mut first = TcpStream::connect(gw.addr).await.unwrap();
    let mut second = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(status_of(&exchange(&mut first, request).await), 200);
    assert_eq!(status_of(&exchange(&mut second, request).await), 200);

    let mut third = TcpStream::connect(gw.addr).await.unwrap();
    let _ = third.write_all(request).await;
    let mut out = Vec::new();
    assert!(read_until_closed(&mut third, &mut out).await, "third connection not closed");
    assert!(out.is_empty(), "third connection was served: {:?}", String::from_utf8_lossy(&out));
    assert_eq!(gw.dataplane.listeners.http_refused.get(), 1);
    assert_eq!(gw.dataplane.listeners.http_connections.get(), 2);

    drop(first);
    // The closed connection gives its place back (once the server saw the close).
    let admitted = async {
        loop {
            if gw.dataplane.listeners.http_connections.get() < 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(BOUND, admitted).await.expect("the closed connection kept its place");
    let mut fourth = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(status_of(&exchange(&mut fourth, request).await), 200);
    assert_eq!(status_of(&exchange(&mut second, request).await), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_but_slow_requests_are_not() {
    let origin = Origin::start("a").await;
    let gw = Plain::start(one_route(origin.addr), options(10_000, Some(300), None)).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    // A request slower than the idle timeout is answered: it is in flight, not idle.
    let slow = b"GET /slow?sleep_ms=1000 HTTP/1.1\r\nhost: a.test\r\n\r\n";
    assert_eq!(status_of(&exchange(&mut stream, slow).await), 200);
    let fast = b"GET / HTTP/1.1\r\nhost: a.test\r\n\r\n";
    assert_eq!(status_of(&exchange(&mut stream, fast).await), 200);
    // Then nothing: the idle connection is closed.
    let mut out = Vec::new();
    assert!(read_until_closed(&mut stream, &mut out).await, "idle connection kept open");
    assert!(out.is_empty(), "{:?}", String::from_utf8_lossy(&out));
    let gone = async {
        while gw.dataplane.listeners.http_connections.get() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(BOUND, gone).await.expect("connection still counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_chunked_body_is_a_400_not_a_502() {
    let origin = Origin::start("a").await;
    let gw = Plain::start(one_route(origin.addr), ListenerOptions::default()).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let raw = b"POST /upload HTTP/1.1\r\nhost: a.test\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nnot hex\r\n0\r\n\r\n";
    let response = exchange(&mut stream, raw).await;
    assert_eq!(status_of(&response), 400, "{response}");
    assert!(response.contains("application/json"), "{response}");

    // A good chunked body still goes through.
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let raw = b"POST /upload HTTP/1.1\r\nhost: a.test\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(status_of(&exchange(&mut stream, raw).await), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_get_400_and_oversized_heads_431() {
    let origin = Origin::start("a").await;
    let gw = Plain::start(one_route(origin.addr), ListenerOptions::default()).await;
    let malformed: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nhost: a.test\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a.test\r\ncontent-length: abc\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a.test\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        b"GET /a b c HTTP/1.1\r\nhost: a.test\r\n\r\n",
    ];
    for raw in malformed {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        let response = exchange(&mut stream, raw).await;
        assert_eq!(status_of(&response), 400, "{:?} → {response}", String::from_utf8_lossy(raw));
    }
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let big = format!("GET / HTTP/1.1\r\nhost: a.test\r\nx-big: {}\r\n\r\n", "a".repeat(70 * 1024));
    let response = exchange(&mut stream, big.as_bytes()).await;
    assert_eq!(status_of(&response), 431, "{response}");
    assert_eq!(origin.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_hold_its_connection_forever() {
    // 64 MiB: far more than the socket buffers, the gateway's buffers and the upstream's.
    let big = bytes::Bytes::from(vec![b'x'; 64 << 20]);
    let handler: Handler = Arc::new(move |_request| http::Response::new(full(big.clone())));
    let origin = Origin::start_service("big", handler).await;
    let gw = Plain::start(one_route(origin.addr), options(10_000, Some(300), None)).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(b"GET /big HTTP/1.1\r\nhost: a.test\r\n\r\n").await.unwrap();
    // Read the first bytes only, then stop reading.
    let mut first = [0u8; 1024];
    let n = tokio::time::timeout(BOUND, stream.read(&mut first)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    // No progress: closed after the idle timeout, then dropped after as long again.
    let gone = async {
        while gw.dataplane.listeners.http_connections.get() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(BOUND, gone).await.expect("the stalled connection is still open");
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2c_connections_are_closed_with_goaway_after_their_requests() {
    let origin = Origin::start("a").await;
    let gw = Plain::start(one_route(origin.addr), options(300, Some(400), None)).await;
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    // Slower than both timeouts, yet answered: a stream in flight is not idle, and an
    // HTTP/2 connection has no header-read deadline between requests.
    for path in ["/slow?sleep_ms=1000", "/"] {
        let request = http::Request::get(format!("http://a.test{path}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response =
            tokio::time::timeout(BOUND, sender.send_request(request)).await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);
    }
    // Then idle: the server ends the connection.
    tokio::time::timeout(BOUND, conn).await.expect("idle h2c connection kept open").unwrap().ok();
    let gone = async {
        while gw.dataplane.listeners.http_connections.get() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(BOUND, gone).await.expect("connection still counted");
}
