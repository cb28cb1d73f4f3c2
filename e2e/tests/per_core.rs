//! e2e: the real `weir` binary with `--runtime per-core` and two workers: two listening
//! sockets on the HTTP port (one per worker runtime, `SO_REUSEPORT`), every connection
//! answered whichever socket the kernel gave it to, reloads under traffic that fail no
//! request and close no client connection, and a SIGTERM that lets an in-flight request
//! finish before the process exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use weir_e2e::{
    ConfigDir, EchoOrigin, KeepAliveConn, WeirProcess, poll_until, prefix_route_yaml, service_yaml,
};

/// Two workers, one runtime each.
const PER_CORE: &[(&str, &str)] = &[("WEIR_RUNTIME", "per-core"), ("WEIR_WORKER_THREADS", "2")];
/// How long a reload may take before a test gives up.
const RELOAD_LIMIT: Duration = Duration::from_secs(5);
const BOUND: Duration = Duration::from_secs(20);

async fn start(dir: &ConfigDir, extra: &[&str]) -> WeirProcess {
    let args: Vec<OsString> = ["--config-dir", &dir.path().display().to_string()]
        .into_iter()
        .chain(extra.iter().copied())
        .map(OsString::from)
        .collect();
    WeirProcess::start_with_env(&args, PER_CORE).await.unwrap()
}

/// The inodes of the listening TCP sockets on `port` (from `/proc/net/tcp`).
fn listening_inodes(port: u16) -> HashSet<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            (local_port == port && fields.get(3) == Some(&"0A")).then(|| fields.get(9).copied())?
        })
        .map(str::to_owned)
        .collect()
}

/// The socket inodes open in process `pid`.
fn socket_inodes(pid: u32) -> HashSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(target.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect()
}

/// The names of the threads of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_each_listen_and_together_answer_every_connection() {
    let origin = EchoOrigin::start("orders").await.unwrap();
    let dir = ConfigDir::new("per-core").unwrap();
    dir.write("services.yaml", &service_yaml("orders", origin.addr.port())).unwrap();
    dir.write("route.yaml", &prefix_route_yaml("orders", "/", "orders")).unwrap();
    let weir = start(&dir, &[]).await;

    // Two listening sockets on the HTTP port, both the process's own.
    let owned: HashSet<String> = socket_inodes(weir.pid());
    let listening = listening_inodes(weir.http_addr.port());
    let ours: Vec<&String> = listening.iter().filter(|inode| owned.contains(*inode)).collect();
    assert_eq!(ours.len(), 2, "listening sockets {listening:?}; log:\n{}", weir.log());
    let names = thread_names(weir.pid());
    for worker in ["weir-worker-0", "weir-worker-1"] {
        assert!(names.iter().any(|n| n == worker), "{names:?}");
    }
    assert!(weir.log().contains("listeners served by one runtime per worker thread"));

    // 32 keep-alive connections, all open at once, 5 requests each: the kernel spreads the
    // connections over both sockets by a hash of their addresses (all 32 on one socket:
    // odds of 2^-31), so a socket nobody accepts on would leave its connections unanswered.
    let mut conns = Vec::new();
    for _ in 0..32 {
        conns.push(KeepAliveConn::connect(weir.http_addr).await.unwrap());
    }
    let mut clients = Vec::new();
    for (n, mut conn) in conns.into_iter().enumerate() {
        clients.push(tokio::spawn(async move {
            for i in 0..5 {
                let reply = conn.get("localhost", &format!("/c{n}/{i}")).await?;
                anyhow::ensure!(reply.status == 200, "status {}: {}", reply.status, reply.text());
                anyhow::ensure!(reply.json()?["backend"] == "orders", "{}", reply.text());
            }
            anyhow::Ok(())
        }));
    }
    for client in clients {
        tokio::time::timeout(BOUND, client)
            .await
            .unwrap_or_else(|_| panic!("a connection was never answered; log:\n{}", weir.log()))
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_request_and_keep_client_connections() {
    let orders = EchoOrigin::start("orders").await.unwrap();
    let users = EchoOrigin::start("users").await.unwrap();
    let dir = ConfigDir::new("per-core-load").unwrap();
    let services =
        service_yaml("orders", orders.addr.port()) + &service_yaml("users", users.addr.port());
    dir.write("services.yaml", &services).unwrap();
    dir.write("route.yaml", &prefix_route_yaml("api", "/api", "orders")).unwrap();
    let weir = start(&dir, &[]).await;

    // Eight clients (spread over both workers), each on ONE keep-alive connection, send
    // requests back to back while the Route flips between two Services ten times; after
    // each flip every client must be answered by the new Service on its same connection.
    let served = weir_e2e::reload::flip_route_under_load(weir.http_addr, &dir, 8, RELOAD_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}; log:\n{}", weir.log()));
    assert!(served.iter().all(|&n| n >= 10), "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    // An origin that holds every request until released, and says when one arrived.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let arrived = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (_origin_stop, origin_rx) = watch::channel(());
    {
        let (arrived, release) = (Arc::clone(&arrived), Arc::clone(&release));
        tokio::spawn(weir_e2e::echo::serve_http1(listener, origin_rx, move |request| {
            let (arrived, release) = (Arc::clone(&arrived), Arc::clone(&release));
            async move {
                if request.uri().path() == "/slow" {
                    arrived.notify_one();
                    release.notified().await;
                }
                http::Response::new(Full::new(Bytes::from_static(b"done")))
            }
        }));
    }
    let dir = ConfigDir::new("per-core-drain").unwrap();
    dir.write("services.yaml", &service_yaml("held", port)).unwrap();
    dir.write("route.yaml", &prefix_route_yaml("held", "/", "held")).unwrap();
    let mut weir = start(&dir, &[]).await;
    assert_eq!(weir.get("localhost", "/fast").await.unwrap().status, 200);

    let addr = weir.http_addr;
    let slow = tokio::spawn(async move { weir_e2e::http_get(addr, "localhost", "/slow").await });
    tokio::time::timeout(BOUND, arrived.notified()).await.expect("the request never arrived");
    weir.terminate().unwrap();
    // The listeners stop accepting (no shutdown delay) while the request is held.
    poll_until(BOUND, "listeners closed", || async move {
        Ok(weir_e2e::http_get(addr, "localhost", "/after").await.is_err().then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", weir.log()));
    assert!(weir.wait_exit(Duration::ZERO).await.unwrap().is_none(), "exited while draining");
    release.notify_one();
    let reply = tokio::time::timeout(BOUND, slow).await.unwrap().unwrap().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "done");
    let status = weir.wait_exit(BOUND).await.unwrap();
    let status = status.unwrap_or_else(|| panic!("still running; log:\n{}", weir.log()));
    assert!(status.success(), "{status}; log:\n{}", weir.log());
}
