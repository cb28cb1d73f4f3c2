//! `weir-loadgen`: the open-loop load generator and reload prober used by `make bench`.
//!
//! ```text
//! weir-loadgen rate --addr 127.0.0.1:8080 --rate 10000 --duration 5 [--connections 32]
//!                   [--path /] [--paths-file FILE] [--header 'Name: value' ...]
//! weir-loadgen reload-live --addr 127.0.0.1:8080 --manifest FILE [--gap-ms 150]
//!                   [--interval-us 1000] [--timeout-ms 10000]
//! ```
//!
//! `rate` schedules request `i` at `start + i / rate` from a dispatcher thread, whatever the
//! responses do (open loop), hands it to the first idle keep-alive connection, and measures
//! latency from the *scheduled* time (no coordinated omission) as well as from the moment
//! the request was actually written (service time). It prints one JSON object: counts,
//! non-2xx, transport errors, connections the server closed (reconnects) and percentiles.
//! `--header` (repeatable) adds a request header to every request, e.g.
//! `--header 'Authorization: Bearer …'` for the jwt routes of the plugin benchmarks.
//!
//! `reload-live` reads a manifest of `SRC<TAB>DST<TAB>PATH` lines. For each line it renames
//! `SRC` onto `DST` (an atomic config change), then polls `PATH` every `--interval-us` on
//! one keep-alive connection until it answers 2xx, and prints the rename-to-live times.
//! Every loop is bounded by a count and a timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};

type Sender = SendRequest<Empty<Bytes>>;

/// Command-line options as `--key value` pairs.
struct Opts(Vec<(String, String)>);

impl Opts {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let Some(key) = k.strip_prefix("--") else { bail!("unexpected argument `{k}`") };
            let v = it.next().with_context(|| format!("--{key} needs a value"))?;
            out.push((key.to_owned(), v.clone()));
        }
        Ok(Opts(out))
    }
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    /// Every value of a repeatable option, in order.
    fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    fn num<T: std::str::FromStr>(&self, key: &str, default: Option<T>) -> anyhow::Result<T> {
        match (self.get(key), default) {
            (Some(v), _) => v.parse().map_err(|_| anyhow::anyhow!("--{key}: bad number `{v}`")),
            (None, Some(d)) => Ok(d),
            (None, None) => bail!("--{key} is required"),
        }
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Extra request headers sent with every request.
type Headers = [(HeaderName, HeaderValue)];

/// Parses `Name: value` (as curl's and wrk's `-H`).
fn parse_header(text: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let (name, value) =
        text.split_once(':').with_context(|| format!("header `{text}`: want `Name: value`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).context("bad header name")?;
    let value = HeaderValue::from_str(value.trim()).context("bad header value")?;
    Ok((name, value))
}

/// Sends one GET (with `headers`) and reads the whole body; returns the status.
async fn get(sender: &mut Sender, path: &str, headers: &Headers) -> anyhow::Result<u16> {
    sender.ready().await?;
    let mut req = http::Request::get(path).header("host", "bench").body(Empty::<Bytes>::new())?;
    for (name, value) in headers {
        req.headers_mut().append(name.clone(), value.clone());
    }
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(status)
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    non_2xx: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
}

/// One worker: one keep-alive connection taking scheduled requests from the shared queue.
async fn worker(
    addr: SocketAddr,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<(Instant, usize)>>>,
    paths: Arc<Vec<String>>,
    headers: Arc<Vec<(HeaderName, HeaderValue)>>,
    counters: Arc<Counters>,
) -> Vec<(u64, u64)> {
    let mut samples = Vec::new();
    let mut sender: Option<Sender> = None;
    let mut connected_once = false;
    loop {
        let next = { queue.lock().await.recv().await };
        let Some((scheduled, idx)) = next else { break };
        if sender.as_ref().is_some_and(SendRequest::is_closed) {
            sender = None;
        }
        if sender.is_none() {
            if connected_once {
                counters.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            match connect(addr).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            connected_once = true;
        }
        let Some(s) = sender.as_mut() else { continue };
        let sent = Instant::now();
        let path = paths.get(idx).map_or("/", String::as_str);
        match get(s, path, &headers).await {
            Ok(status) => {
                let done = Instant::now();
                if (200..300).contains(&status) {
                    counters.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    counters.non_2xx.fetch_add(1, Ordering::Relaxed);
                }
                let total = done.saturating_duration_since(scheduled).as_nanos();
                let service = done.saturating_duration_since(sent).as_nanos();
                samples.push((
                    u64::try_from(total).unwrap_or(u64::MAX),
                    u64::try_from(service).unwrap_or(u64::MAX),
                ));
            }
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                sender = None;
            }
        }
    }
    samples
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted.get(rank.min(sorted.len() - 1)).map_or(f64::NAN, |&v| v as f64 / 1000.0)
}

/// A tiny xorshift generator: random paths need no crate.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// What one fixed-rate run measured.
#[derive(Debug)]
struct Report {
    scheduled: u64,
    ok: u64,
    non_2xx: u64,
    errors: u64,
    reconnects: u64,
    /// Latency from the scheduled send time, sorted, in ns.
    totals: Vec<u64>,
    /// Latency from the actual send, sorted, in ns.
    services: Vec<u64>,
    /// How late the dispatcher handed each request over, sorted, in ns.
    late: Vec<u64>,
}

impl Report {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "scheduled": self.scheduled,
            "ok": self.ok,
            "non_2xx": self.non_2xx,
            "errors": self.errors,
            "reconnects": self.reconnects,
            "p50_us": percentile(&self.totals, 50.0),
            "p90_us": percentile(&self.totals, 90.0),
            "p99_us": percentile(&self.totals, 99.0),
            "service_p50_us": percentile(&self.services, 50.0),
            "service_p99_us": percentile(&self.services, 99.0),
            "dispatch_late_p50_us": percentile(&self.late, 50.0),
            "dispatch_late_p99_us": percentile(&self.late, 99.0),
        })
    }
}

/// Sends `rate * duration` GETs (random paths from `paths`, each with `headers`) at a fixed
/// rate over `connections` keep-alive connections to `addr`.
async fn run_rate(
    addr: SocketAddr,
    rate: f64,
    duration: f64,
    connections: usize,
    paths: Vec<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        rate > 0.0 && duration > 0.0 && connections > 0,
        "rate, duration, connections > 0"
    );
    anyhow::ensure!(!paths.is_empty(), "no paths");
    let total = (rate * duration) as u64;
    let (tx, rx) = mpsc::unbounded_channel();
    let queue = Arc::new(Mutex::new(rx));
    let paths = Arc::new(paths);
    let headers = Arc::new(headers);
    let counters = Arc::new(Counters::default());
    let mut workers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let w = worker(
            addr,
            Arc::clone(&queue),
            Arc::clone(&paths),
            Arc::clone(&headers),
            Arc::clone(&counters),
        );
        workers.push(tokio::spawn(w));
    }
    let n_paths = paths.len() as u64;
    let period = Duration::from_secs_f64(1.0 / rate);
    // The dispatcher: an OS thread sleeping to each scheduled time (finer than tokio's 1 ms
    // timer), never waiting for responses.
    let dispatcher = std::thread::spawn(move || {
        let start = Instant::now() + Duration::from_millis(50);
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut late_ns = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for i in 0..total {
            let at = start + period.mul_f64(i as f64);
            let now = Instant::now();
            if at > now + Duration::from_micros(20) {
                std::thread::sleep(at - now);
            }
            let idx = usize::try_from(xorshift(&mut seed) % n_paths).unwrap_or(0);
            late_ns.push(Instant::now().saturating_duration_since(at).as_nanos() as u64);
            if tx.send((at, idx)).is_err() {
                break;
            }
        }
        late_ns
    });
    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.await?);
    }
    let mut late = dispatcher.join().map_err(|_| anyhow::anyhow!("dispatcher panicked"))?;
    let mut totals: Vec<u64> = samples.iter().map(|s| s.0).collect();
    let mut services: Vec<u64> = samples.iter().map(|s| s.1).collect();
    totals.sort_unstable();
    services.sort_unstable();
    late.sort_unstable();
    Ok(Report {
        scheduled: total,
        ok: counters.ok.load(Ordering::Relaxed),
        non_2xx: counters.non_2xx.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        reconnects: counters.reconnects.load(Ordering::Relaxed),
        totals,
        services,
        late,
    })
}

async fn rate(opts: &Opts) -> anyhow::Result<()> {
    let addr: SocketAddr = opts.get("addr").context("--addr is required")?.parse()?;
    let rate: f64 = opts.num("rate", None)?;
    let duration: f64 = opts.num("duration", Some(5.0))?;
    let connections: usize = opts.num("connections", Some(32))?;
    let paths: Vec<String> = match opts.get("paths-file") {
        Some(file) => std::fs::read_to_string(file)?.lines().map(str::to_owned).collect(),
        None => vec![opts.get("path").unwrap_or("/").to_owned()],
    };
    let headers = opts.all("header").map(parse_header).collect::<anyhow::Result<Vec<_>>>()?;
    let report = run_rate(addr, rate, duration, connections, paths, headers).await?;
    println!("{}", report.json());
    Ok(())
}

async fn reload_live(opts: &Opts) -> anyhow::Result<()> {
    let addr: SocketAddr = opts.get("addr").context("--addr is required")?.parse()?;
    let manifest = std::fs::read_to_string(opts.get("manifest").context("--manifest")?)?;
    let gap = Duration::from_millis(opts.num("gap-ms", Some(150))?);
    let interval = Duration::from_micros(opts.num("interval-us", Some(1000))?);
    let timeout = Duration::from_millis(opts.num("timeout-ms", Some(10_000))?);
    let mut sender = connect(addr).await?;
    let mut live_ms = Vec::new();
    let mut timeouts = 0u32;
    for line in manifest.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split('\t');
        let (Some(src), Some(dst), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("manifest line `{line}`: want SRC<TAB>DST<TAB>PATH");
        };
        tokio::time::sleep(gap).await;
        let start = Instant::now();
        std::fs::rename(src, dst).with_context(|| format!("rename {src} -> {dst}"))?;
        let mut live = None;
        while start.elapsed() < timeout {
            if sender.is_closed() {
                sender = connect(addr).await?;
            }
            if let Ok(status) = get(&mut sender, path, &[]).await
                && (200..300).contains(&status)
            {
                live = Some(start.elapsed());
                break;
            }
            tokio::time::sleep(interval).await;
        }
        match live {
            Some(d) => live_ms.push(d.as_secs_f64() * 1000.0),
            None => timeouts += 1,
        }
    }
    println!("{}", serde_json::json!({ "live_ms": live_ms, "timeouts": timeouts }));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        bail!("usage: weir-loadgen rate|reload-live --addr HOST:PORT ... (see the source header)");
    };
    let opts = Opts::parse(rest)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match cmd.as_str() {
        "rate" => runtime.block_on(rate(&opts)),
        "reload-live" => runtime.block_on(reload_live(&opts)),
        other => bail!("unknown command `{other}`: rate or reload-live"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use weir_e2e::echo::EchoOrigin;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn options_parse_and_reject_strays() {
        let args: Vec<String> = ["--rate", "10", "--addr", "127.0.0.1:1"].map(String::from).into();
        let o = Opts::parse(&args).unwrap();
        assert_eq!(o.num::<f64>("rate", None).unwrap(), 10.0);
        assert_eq!(o.num::<usize>("connections", Some(32)).unwrap(), 32);
        assert!(o.num::<f64>("duration", None).is_err());
        assert!(Opts::parse(&["stray".to_owned()]).is_err());
        assert!(Opts::parse(&["--rate".to_owned()]).is_err());
        let args: Vec<String> =
            ["--header", "A: 1", "--header", "b:two words "].map(String::from).into();
        let o = Opts::parse(&args).unwrap();
        let headers: Vec<_> = o.all("header").map(|h| parse_header(h).unwrap()).collect();
        assert_eq!(headers[0], (HeaderName::from_static("a"), HeaderValue::from_static("1")));
        assert_eq!(headers[1].1, "two words");
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
    }

    /// A real hyper origin that answers 200 only to `GET /p` carrying both headers (401
    /// otherwise): every request of the run carries the `--header`s and the `--path`.
    #[tokio::test]
    async fn headers_and_path_go_with_every_request() {
        use http_body_util::Full;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            for _ in 0..16 {
                let Ok((stream, _)) = listener.accept().await else { return };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req: http::Request<_>| {
                        let h = req.headers();
                        let ok = req.uri().path() == "/p"
                            && h.get("authorization").is_some_and(|v| v == "Bearer t.k.n")
                            && h.get_all("x-b").iter().count() == 2;
                        let status = if ok { 200 } else { 401 };
                        let resp = http::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from_static(b"ok")));
                        async move { resp }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    let _ = conn.await;
                });
            }
        });
        let headers: Vec<_> = ["Authorization: Bearer t.k.n", "x-b: 1", "x-b: 2"]
            .into_iter()
            .map(|h| parse_header(h).unwrap())
            .collect();
        let r =
            run_rate(addr, 200.0, 0.25, 2, vec!["/p".to_owned()], headers.clone()).await.unwrap();
        assert_eq!((r.scheduled, r.ok, r.non_2xx, r.errors), (50, 50, 0, 0));
        // The same origin refuses requests without them: the check above can fail.
        let r = run_rate(addr, 200.0, 0.1, 2, vec!["/p".to_owned()], Vec::new()).await.unwrap();
        assert_eq!((r.ok, r.non_2xx), (0, 20));
        let r = run_rate(addr, 200.0, 0.1, 2, vec!["/q".to_owned()], headers).await.unwrap();
        assert_eq!((r.ok, r.non_2xx), (0, 20));
        accept.abort();
    }

    /// A real echo origin on 127.0.0.1:0: every scheduled request is answered 2xx on the
    /// same keep-alive connections, and a missing path list is refused.
    #[tokio::test]
    async fn fixed_rate_run_sends_every_scheduled_request() {
        let origin = EchoOrigin::start("o").await.unwrap();
        let paths = vec!["/a".to_owned(), "/b".to_owned()];
        let r = run_rate(origin.addr, 200.0, 0.5, 4, paths, Vec::new()).await.unwrap();
        assert_eq!(r.scheduled, 100);
        assert_eq!((r.ok, r.non_2xx, r.errors, r.reconnects), (100, 0, 0, 0));
        assert_eq!(r.totals.len(), 100);
        // Latency from the scheduled time includes the service time.
        assert!(r.totals[50] >= r.services[0]);
        assert!(run_rate(origin.addr, 200.0, 0.5, 4, Vec::new(), Vec::new()).await.is_err());
    }

    /// Nothing listens: every request is a transport error, none is counted as answered.
    #[tokio::test]
    async fn refused_connections_are_errors() {
        let addr = weir_e2e::free_addr().unwrap();
        let r = run_rate(addr, 100.0, 0.2, 2, vec!["/".to_owned()], Vec::new()).await.unwrap();
        assert_eq!(r.scheduled, 20);
        assert_eq!(r.ok, 0);
        assert_eq!(r.errors, 20);
    }
}
