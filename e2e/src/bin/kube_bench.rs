//! `weir-kube-bench`: "watch event → live" in Kubernetes mode, for `make bench`.
//!
//! ```text
//! weir-kube-bench --weir PATH [--routes 10000] [--changes 20] [--gap-ms 200]
//!                 [--interval-us 500] [--timeout-ms 10000] [--cpu N]
//! ```
//!
//! Starts the API server double in this process with `--routes` Routes (host
//! `r<i>.bench`), a Service and an EndpointSlice pointing at an echo origin on loopback, then
//! `weir run --kubeconfig` (one worker thread, pinned with `taskset -c N` when `--cpu` is
//! given) and waits until it serves. Then, `--changes` times: creates one new Route through
//! the double's HTTP API (like `kubectl apply`), and from the moment the create returned,
//! polls the new host on one keep-alive connection every `--interval-us` until it answers
//! 200. Prints one JSON object with the times in milliseconds. Every loop is bounded by a
//! count and a timeout; the weir process is killed at the end.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;
use weir_e2e::apiserver::ApiServer;
use weir_e2e::{ConfigDir, EchoOrigin, KeepAliveConn, free_addr, http_get, service_yaml};

fn opt(args: &[String], key: &str) -> Option<String> {
    args.windows(2).find(|w| w[0] == key).map(|w| w[1].clone())
}

fn num(args: &[String], key: &str, default: u64) -> anyhow::Result<u64> {
    match opt(args, key) {
        Some(v) => v.parse().with_context(|| format!("{key} {v}")),
        None => Ok(default),
    }
}

fn route(name: &str, host: &str) -> serde_json::Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Route",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"hosts": [host], "rules": [{"backends": [{"service": "svc", "port": 80}]}]}})
}

async fn wait_200(
    addr: SocketAddr,
    host: &str,
    interval: Duration,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut conn = KeepAliveConn::connect(addr).await?;
    while started.elapsed() < timeout {
        match conn.get(host, "/").await {
            Ok(reply) if reply.status == 200 => return Ok(started.elapsed()),
            Ok(_) => {}
            Err(_) => conn = KeepAliveConn::connect(addr).await?,
        }
        tokio::time::sleep(interval).await;
    }
    bail!("{host} not served within {timeout:?}")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let weir = opt(&args, "--weir").context("--weir PATH is required")?;
    let routes = num(&args, "--routes", 10_000)?;
    let changes = num(&args, "--changes", 20)?;
    let gap = Duration::from_millis(num(&args, "--gap-ms", 200)?);
    let interval = Duration::from_micros(num(&args, "--interval-us", 500)?);
    let timeout = Duration::from_millis(num(&args, "--timeout-ms", 10_000)?);

    let server = ApiServer::start().await?;
    let origin = EchoOrigin::start("bench").await?;
    server.create_yaml(&service_yaml("svc", origin.addr.port()))?;
    let objects = (0..routes).map(|i| route(&format!("r{i}"), &format!("r{i}.bench"))).collect();
    server.create_objects(objects)?;
    let dir = ConfigDir::new("kube-bench")?;
    let kubeconfig = dir.write("kubeconfig.yaml", &server.kubeconfig_yaml())?;

    let (http, admin, https) = (free_addr()?, free_addr()?, free_addr()?);
    let mut command = match opt(&args, "--cpu") {
        Some(cpu) => {
            let mut c = std::process::Command::new("taskset");
            c.arg("-c").arg(cpu).arg(&weir);
            c
        }
        None => std::process::Command::new(&weir),
    };
    let mut child = command
        .arg("run")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--namespace", "default", "--log-format", "json"])
        .arg("--http-addr")
        .arg(http.to_string())
        .arg("--admin-addr")
        .arg(admin.to_string())
        .arg("--https-addr")
        .arg(https.to_string())
        .env("WEIR_WORKER_THREADS", "1")
        .env("RUST_LOG", std::env::var("WEIR_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {weir}"))?;

    let result = async {
        let started = Instant::now();
        loop {
            if let Ok(reply) = http_get(admin, "localhost", "/readyz").await
                && reply.status == 200
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("weir not ready within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ready_ms = started.elapsed().as_secs_f64() * 1e3;
        let last = format!("r{}.bench", routes.saturating_sub(1));
        wait_200(http, &last, interval, timeout).await?;
        let client = server.client();
        let mut times = Vec::new();
        for i in 0..changes {
            tokio::time::sleep(gap).await;
            let host = format!("new{i}.bench");
            weir_e2e::kubectl::apply(&client, &route(&format!("new{i}"), &host), "bench").await?;
            let live = wait_200(http, &host, interval, timeout).await?;
            times.push(live.as_secs_f64() * 1e3);
        }
        Ok((ready_ms, times))
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let (ready_ms, times) = result?;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "{}",
        json!({"routes": routes, "ready_ms": ready_ms, "live_ms": times, "median_ms": median,
               "max_ms": sorted.last().copied().unwrap_or(f64::NAN)})
    );
    server.stop().await;
    Ok(())
}
