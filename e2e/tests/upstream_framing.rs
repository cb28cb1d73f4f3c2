//! e2e: HTTP/1.1 framing between the real `weir` binary and a raw TCP origin that writes
//! byte-exact answers: pipelined client requests, early upstream closes (in the head and
//! in the body), `Connection: close`, 100-continue, HEAD/204/304 without bodies, chunked
//! trailers (to an HTTP/2 client), an 8 MiB answer, an answer sent before the request body
//! was read, and smuggling-style inputs from the upstream side (502, and the connection
//! never reused) and from the client side (refused by weir, never forwarded).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_e2e::{ConfigDir, WeirProcess, prefix_route_yaml, service_yaml};

const WAIT: Duration = Duration::from_secs(10);
const BIG: usize = 8 << 20;

/// What the origin does for one request path.
struct Script {
    /// The bytes written back.
    answer: Vec<u8>,
    /// Closes the connection after writing them.
    close: bool,
    /// Answers before reading the request body (then reads and discards it).
    early: bool,
}

fn script(path: &str) -> Script {
    let answer = |s: &str| s.as_bytes().to_vec();
    let keep = |a: Vec<u8>| Script { answer: a, close: false, early: false };
    let close = |a: Vec<u8>| Script { answer: a, close: true, early: false };
    match path {
        "/ok" => keep(answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")),
        "/close" => {
            keep(answer("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"))
        }
        "/http10" => keep(answer("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")),
        "/cut-head" => close(answer("HTTP/1.1 200 OK\r\nContent-Le")),
        "/cut-body" => close(answer("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")),
        "/head" => keep(answer("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")),
        "/204" => keep(answer("HTTP/1.1 204 No Content\r\n\r\n")),
        "/304" => keep(answer("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n")),
        "/continue" => keep(answer(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter",
        )),
        "/trailers" => keep(answer(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 42\r\n\r\n",
        )),
        "/big" => {
            let mut a = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").into_bytes();
            a.extend(pattern(BIG));
            keep(a)
        }
        "/early" => Script {
            answer: answer("HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nnope"),
            close: false,
            early: true,
        },
        "/extra" => {
            keep(answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"))
        }
        "/cl-te" => keep(answer(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )),
        "/two-cl" => {
            keep(answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"))
        }
        "/chunked-identity" => close(answer(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        )),
        "/chunk-0x" => {
            keep(answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x10\r\n"))
        }
        "/chunk-neg" => keep(answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n")),
        "/chunk-huge" => keep(answer(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n",
        )),
        "/chunk-crlf" => {
            keep(answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n"))
        }
        "/fold" => {
            keep(answer("HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok"))
        }
        "/huge-head" => {
            let mut a = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..60 {
                a.extend(format!("x-h{i}: {}\r\n", "v".repeat(8000)).into_bytes());
            }
            a.extend(b"Content-Length: 2\r\n\r\nok");
            keep(a)
        }
        _ => keep(answer("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")),
    }
}

/// 0, 1, …, 250, 0, 1, …: a body whose corruption anywhere shows.
fn pattern(n: usize) -> impl Iterator<Item = u8> {
    (0..n).map(|i| (i % 251) as u8)
}

/// A raw TCP origin answering by [`script`]: counts the connections it accepted and logs
/// the request lines (with the request's body length) it read.
struct RawOrigin {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawOrigin {
    async fn start() -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (a, r) = (Arc::clone(&accepted), Arc::clone(&requests));
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                conns.spawn(serve(stream, Arc::clone(&r)));
            }
        });
        RawOrigin { addr, accepted, requests, task }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Serves requests on one connection until it closes (bounded by [`WAIT`] per read).
async fn serve(mut stream: TcpStream, requests: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_until_head(&mut stream, &mut buf).await else { return };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let line = head.lines().next().unwrap_or_default().to_owned();
        let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        let script = script(&path);
        if chunked {
            // Read to the last chunk (the tests send small chunked bodies only).
            let Some(end) = read_until(&mut stream, &mut buf, b"0\r\n\r\n").await else { return };
            buf.drain(..end);
            requests.lock().unwrap().push(format!("{line} body=chunked"));
        } else {
            if !script.early && !read_at_least(&mut stream, &mut buf, length).await {
                return;
            }
            requests.lock().unwrap().push(format!("{line} body={length}"));
        }
        if stream.write_all(&script.answer).await.is_err() {
            return;
        }
        if script.early {
            // Read and discard the body the gateway may still send, then close.
            let _ = read_at_least(&mut stream, &mut buf, length).await;
            return;
        }
        if script.close {
            let _ = stream.shutdown().await;
            return;
        }
        if !chunked {
            buf.drain(..length.min(buf.len()));
        }
    }
}

async fn read_until_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    read_until(stream, buf, b"\r\n\r\n").await
}

/// Reads until `buf` holds `end`; the length up to and with it.
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, end: &[u8]) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(end.len()).position(|w| w == end) {
            return Some(i + end.len());
        }
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(WAIT, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

async fn read_at_least(stream: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> bool {
    while buf.len() < n {
        let mut chunk = vec![0u8; 64 * 1024];
        match tokio::time::timeout(WAIT, stream.read(&mut chunk)).await {
            Ok(Ok(k)) if k > 0 => buf.extend_from_slice(&chunk[..k]),
            _ => return false,
        }
    }
    true
}

/// weir with one route sending everything to `origin`, on one worker: these tests count
/// the upstream connections a sequence of requests uses, and with `--runtime per-core` (the
/// default on more than one core) each worker keeps its own pooled connections.
async fn weir_for(origin: &RawOrigin) -> (WeirProcess, ConfigDir) {
    let dir = ConfigDir::new("framing").unwrap();
    dir.write("services.yaml", &service_yaml("raw", origin.addr.port())).unwrap();
    dir.write("route.yaml", &prefix_route_yaml("raw", "/", "raw")).unwrap();
    let args = [std::ffi::OsString::from("--config-dir"), dir.path().as_os_str().to_owned()];
    let weir = WeirProcess::start_with_env(&args, &[("WEIR_WORKER_THREADS", "1")]).await.unwrap();
    (weir, dir)
}

/// Writes `request` on a new connection to `addr` and reads until weir closes it (the
/// requests ask for `Connection: close`) or [`WAIT`] passes.
async fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_to_close(&mut stream).await
}

async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut out)).await;
    out
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: raw.test\r\nConnection: close\r\n\r\n").into_bytes()
}

/// The status code of the first response in `bytes`.
fn status(bytes: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(bytes);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn split_head(bytes: &[u8]) -> (String, &[u8]) {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    (String::from_utf8_lossy(&bytes[..end]).into_owned(), &bytes[end..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_answers_reuse_one_upstream_connection_and_closing_ones_do_not() {
    let origin = RawOrigin::start().await;
    let (weir, _dir) = weir_for(&origin).await;
    for _ in 0..3 {
        let reply = weir.get("raw.test", "/ok").await.unwrap();
        assert_eq!((reply.status, reply.text().as_str()), (200, "ok"));
    }
    assert_eq!(origin.accepted(), 1, "keep-alive answers share one connection");

    for path in ["/close", "/http10"] {
        let before = origin.accepted();
        for _ in 0..2 {
            let reply = weir.get("raw.test", path).await.unwrap();
            assert_eq!((reply.status, reply.text().as_str()), (200, "ok"), "{path}");
        }
        let reply = weir.get("raw.test", "/ok").await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(origin.accepted(), before + 2, "{path}: each answer closed its connection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let origin = RawOrigin::start().await;
    let (weir, _dir) = weir_for(&origin).await;
    let two = b"GET /ok HTTP/1.1\r\nHost: raw.test\r\n\r\nGET /204 HTTP/1.1\r\nHost: raw.test\r\nConnection: close\r\n\r\n";
    let bytes = raw(weir.http_addr, two).await;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let first = text.find("HTTP/1.1 200 OK").expect(&text);
    let second = text.find("HTTP/1.1 204 No Content").expect(&text);
    assert!(first < second, "{text}");
    assert!(text[..second].ends_with("\r\n\r\nok"), "{text}");
    let lines: Vec<String> = origin.requests();
    assert_eq!(lines, ["GET /ok HTTP/1.1 body=0", "GET /204 HTTP/1.1 body=0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_early_gives_502_or_a_cut_body_and_is_not_reused() {
    let origin = RawOrigin::start().await;
    let (weir, _dir) = weir_for(&origin).await;
    let bytes = raw(weir.http_addr, &get("/cut-head")).await;
    assert_eq!(status(&bytes), 502, "{}", String::from_utf8_lossy(&bytes));

    // The head was 200 with Content-Length 10: the client never gets a complete answer
    // (hyper's server drops the connection when the body fails).
    let bytes = raw(weir.http_addr, &get("/cut-body")).await;
    if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let (head, body) = (String::from_utf8_lossy(&bytes[..end]), &bytes[end + 4..]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body.len() < 10, "{body:?}");
    }

    let before = origin.accepted();
    assert_eq!(weir.get("raw.test", "/ok").await.unwrap().status, 200);
    assert_eq!(origin.accepted(), before + 1, "closed connections are never reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_204_and_304_answers_have_no_body_and_keep_the_connection() {
    let origin = RawOrigin::start().await;
    let (weir, _dir) = weir_for(&origin).await;
    let bytes =
        raw(weir.http_addr, b"HEAD /head HTTP/1.1\r\nHost: raw.test\r\nConnection: close\r\n\r\n")
            .await;
    let (head, body) = split_head(&bytes);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-length: 100"), "{head}");
    assert!(body.is_empty(), "{body:?}");
    for (path, code) in [("/204", 204), ("/304", 304)] {
        let bytes = raw(weir.http_addr, &get(path)).await;
        let (head, body) = split_head(&bytes);
        assert_eq!(status(&bytes), code, "{head}");
        assert!(body.is_empty(), "{path}: {body:?}");
    }
    assert_eq!(weir.get("raw.test", "/ok").await.unwrap().text(), "ok");
    assert_eq!(origin.accepted(), 1, "bodiless answers leave the connection reusable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_the_body_through_and_interim_answers_are_skipped() {
    let origin = RawOrigin::start().await;
    let (weir, _dir) = weir_for(&origin).await;
    let mut stream = TcpStream::connect(weir.http_addr).await.unwrap();
    stream
        .write_all(b"POST /ok HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // weir says go on (hyper's server, when the body is first asked for).
    let mut interim = [0u8; 25];
    tokio::time::timeout(WAIT, stream.read_exact(&mut interim)).await.unwrap().unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").await.unwrap();
    let bytes = read_to_close(&mut stream).await;
    let (head, body) = split_head(&bytes);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"ok");
    assert_eq!(origin.requests(), ["POST /ok HTTP/1.1 body=5"]);

    // An upstream's own 100 Continue is not passed on: the final answer is.
    let bytes = raw(weir.http_addr, &get("/continue")).await;
    let (head, body) = split_head(&bytes);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_trailers_reach_an_http2_client() {
    let origin = RawOrigin::start().await;
    let (weir, _dir) = weir_for(&origin).await;
    let stream = TcpStream::connect(weir.http_addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get("http://raw.test/trailers")
        .header("te", "trailers")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(request)).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let collected =
        tokio::time::timeout(WAIT, response.into_body().collect()).await.unwrap().unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["x-sum"], "42");
    assert_eq!(collected.to_bytes(), "hello world");
    // Over HTTP/1.1 the body arrives whole (no `Trailer` header: no trailers).
    let reply = weir.get("raw.test", "/trailers").await.unwrap();
    assert_eq!(reply.text(), "hello world");
    assert_eq!(origin.accepted(), 1, "a complete chunked body leaves the connection reusable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_larger_than_any_buffer_arrives_intact() {
    let origin = RawOrigin::start().await;
    let (weir, _dir) = weir_for(&origin).await;
    for _ in 0..2 {
        let reply = weir.get("raw.test", "/big").await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body.len(), BIG);
        let want: u64 = pattern(BIG).map(u64::from).sum();
        let got: u64 = reply.body.iter().map(|&b| u64::from(b)).sum();
        assert_eq!(got, want);
        assert!(reply.body.iter().copied().eq(pattern(BIG)), "the bytes differ");
    }
    assert_eq!(origin.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_sent_before_the_request_body_is_read_is_delivered() {
    let origin = RawOrigin::start().await;
    let (weir, _dir) = weir_for(&origin).await;
    let body = vec![b'x'; 4 << 20];
    let mut request = format!(
        "POST /early HTTP/1.1\r\nHost: raw.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let mut stream = TcpStream::connect(weir.http_addr).await.unwrap();
    let (mut read, mut write) = stream.split();
    let (_, bytes) = tokio::join!(
        async {
            let _ = write.write_all(&request).await;
        },
        async {
            let mut out = Vec::new();
            let _ = tokio::time::timeout(WAIT, read.read_to_end(&mut out)).await;
            out
        }
    );
    let (head, answer) = split_head(&bytes);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(answer, b"nope");
    let before = origin.accepted();
    assert_eq!(weir.get("raw.test", "/ok").await.unwrap().status, 200);
    assert_eq!(origin.accepted(), before + 1, "a connection answered early is not reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_style_answers_get_502_and_their_connection_is_never_reused() {
    let origin = RawOrigin::start().await;
    let (weir, _dir) = weir_for(&origin).await;
    // Requests go one at a time, so at most one connection is idle: the bad answer's
    // connection is either that one or a new one, and when it is not pooled the next
    // request needs a new connection.
    for path in ["/cl-te", "/two-cl", "/fold", "/huge-head"] {
        let bytes = raw(weir.http_addr, &get(path)).await;
        let before = origin.accepted();
        assert_eq!(status(&bytes), 502, "{path}: {}", String::from_utf8_lossy(&bytes));
        assert_eq!(weir.get("raw.test", "/ok").await.unwrap().text(), "ok");
        assert_eq!(origin.accepted(), before + 1, "{path}: its connection was not reused");
    }
    let log = weir.log();
    assert!(log.contains("Content-Length and Transfer-Encoding both present"), "{log}");
    assert!(log.contains("invalid Content-Length"), "{log}");

    // Invalid chunks after a valid head: the client's answer is cut off, and the
    // connection goes.
    for path in ["/chunk-0x", "/chunk-neg", "/chunk-huge", "/chunk-crlf"] {
        let bytes = raw(weir.http_addr, &get(path)).await;
        let before = origin.accepted();
        // hyper's server drops the client connection when the body fails (before or after
        // flushing the head): never a complete chunked answer.
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let body = &bytes[end + 4..];
            assert!(!body.ends_with(b"0\r\n\r\n"), "{path}: a clean end: {body:?}");
        }
        assert_eq!(weir.get("raw.test", "/ok").await.unwrap().text(), "ok");
        assert_eq!(origin.accepted(), before + 1, "{path}: its connection was not reused");
    }

    // `chunked, identity`: chunked is not last, so the body runs to the close (RFC 9112
    // §6.3), passed on as is, and the connection is not reused.
    let reply = weir.get("raw.test", "/chunked-identity").await.unwrap();
    let before = origin.accepted();
    assert_eq!(reply.text(), "2\r\nok\r\n0\r\n\r\n");
    assert_eq!(weir.get("raw.test", "/ok").await.unwrap().text(), "ok");
    assert_eq!(origin.accepted(), before + 1);

    // Data after a complete answer: the connection is not reused.
    assert_eq!(weir.get("raw.test", "/extra").await.unwrap().text(), "ok");
    let before = origin.accepted();
    assert_eq!(weir.get("raw.test", "/ok").await.unwrap().text(), "ok");
    assert_eq!(origin.accepted(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_style_requests_are_refused_and_never_forwarded() {
    let origin = RawOrigin::start().await;
    let (weir, _dir) = weir_for(&origin).await;
    let requests: [&[u8]; 3] = [
        b"POST /ok HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: raw.test\r\n\r\n",
        b"POST /ok HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello!",
        b"POST /ok HTTP/1.1\r\nHost: raw.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    ];
    // CL+TE: hyper's server lets Transfer-Encoding win (RFC 9112 §6.1), drops the
    // Content-Length and closes the connection after the answer: what follows the chunked
    // body is never read as a request.
    let bytes = raw(weir.http_addr, requests[0]).await;
    assert_eq!(status(&bytes), 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(origin.requests(), ["POST /ok HTTP/1.1 body=chunked"]);
    // Differing lengths: 400, nothing forwarded.
    let bytes = raw(weir.http_addr, requests[1]).await;
    assert_eq!(status(&bytes), 400, "{}", String::from_utf8_lossy(&bytes));
    // A broken chunk size in the client's body: 400, no complete request upstream.
    let bytes = raw(weir.http_addr, requests[2]).await;
    assert_eq!(status(&bytes), 400, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(origin.requests(), ["POST /ok HTTP/1.1 body=chunked"]);
}
