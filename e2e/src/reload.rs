//! Reloads under traffic: a Route flipped between two Services while keep-alive clients
//! send requests back to back (used by the standalone and per-core e2e tests).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::{ConfigDir, KeepAliveConn, poll_until, prefix_route_yaml};

/// Flips Route `api` (prefix `/api`, in `dir`'s `route.yaml`) ten times between the Services
/// `users` and `orders` while `clients` clients, each on ONE keep-alive connection to `addr`,
/// send `GET /api/x` back to back. Every request must be answered 200, and after each flip
/// every client must be answered by the new Service on its same connection within `limit`.
/// Returns how many requests each client had answered; an error says which request failed or
/// which flip was not seen in time. The loops are bounded (a million requests per client, and
/// `limit` per flip).
pub async fn flip_route_under_load(
    addr: SocketAddr,
    dir: &ConfigDir,
    clients: usize,
    limit: Duration,
) -> anyhow::Result<Vec<u64>> {
    let stop = Arc::new(AtomicBool::new(false));
    let last: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(vec![String::new(); clients]));
    let mut tasks = Vec::new();
    for n in 0..clients {
        let mut conn = KeepAliveConn::connect(addr).await?;
        let (stop, last) = (Arc::clone(&stop), Arc::clone(&last));
        tasks.push(tokio::spawn(async move {
            let mut served = 0u64;
            for _ in 0..1_000_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let reply = conn.get("localhost", "/api/x").await?;
                anyhow::ensure!(reply.status == 200, "status {}: {}", reply.status, reply.text());
                let backend = reply.json()?["backend"].as_str().unwrap_or_default().to_owned();
                last.lock().unwrap_or_else(PoisonError::into_inner)[n] = backend;
                served += 1;
            }
            anyhow::Ok(served)
        }));
    }
    let mut flips = Ok(());
    for i in 0..10 {
        let service = if i % 2 == 0 { "users" } else { "orders" };
        dir.write("route.yaml", &prefix_route_yaml("api", "/api", service))?;
        flips = poll_until(limit, &format!("every client served by {service}"), || {
            let last = Arc::clone(&last);
            async move {
                let last = last.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(last.iter().all(|b| b == service).then_some(()))
            }
        })
        .await;
        if flips.is_err() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut served = Vec::with_capacity(clients);
    for task in tasks {
        let n = task.await?.map_err(|e| {
            e.context("a request failed or a client connection closed during reloads")
        })?;
        served.push(n);
    }
    flips?;
    Ok(served)
}
