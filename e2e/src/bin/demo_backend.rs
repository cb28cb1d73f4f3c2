//! `weir-demo-backend NAME=ADDR [NAME=ADDR ...]`: small HTTP/1.1 echo servers for
//! `make run`. Each answers every request with JSON naming itself and describing the request
//! (`backend`, `method`, `path`, `host`, `headers`), with the switches of [`weir_e2e::demo`]
//! (`?fail=NNN`, `?delay=MS`, `/healthz` set by `POST /demo/health?status=NNN`). Stops on
//! SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use weir_e2e::demo::{DemoState, handle};

const USAGE: &str = "usage: weir-demo-backend NAME=ADDR [NAME=ADDR ...]  \
                     (e.g. orders-v1=127.0.0.1:9001)";

fn parse_args() -> anyhow::Result<Vec<(String, SocketAddr)>> {
    let mut out = Vec::new();
    for arg in std::env::args().skip(1) {
        if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let (name, addr) = arg.split_once('=').with_context(|| format!("`{arg}`: {USAGE}"))?;
        anyhow::ensure!(!name.is_empty(), "`{arg}`: empty NAME; {USAGE}");
        let addr: SocketAddr = addr.parse().with_context(|| format!("`{arg}`: bad address"))?;
        out.push((name.to_owned(), addr));
    }
    anyhow::ensure!(!out.is_empty(), "{USAGE}");
    Ok(out)
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let backends = parse_args()?;
    let (tx, rx) = watch::channel(());
    let mut tasks = Vec::new();
    for (name, addr) in backends {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        eprintln!("weir-demo-backend: {name} listening on http://{addr}");
        let state = DemoState::new(&name);
        let handler = move |request| handle(Arc::clone(&state), request);
        tasks.push(tokio::spawn(weir_e2e::serve_http1(listener, rx.clone(), handler)));
    }
    shutdown_signal().await?;
    let _ = tx.send(());
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}
