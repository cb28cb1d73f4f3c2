//! `weir-demo-backend NAME=ADDR [NAME=ADDR ...]`: small HTTP/1.1 echo servers for
//! `make run`. Each answers every request with JSON naming itself and describing the request
//! (`backend`, `method`, `path`, `host`, `headers`). Stops on SIGINT or SIGTERM.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

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
        tasks.push(tokio::spawn(weir_e2e::serve_echo(name, listener, rx.clone())));
    }
    shutdown_signal().await?;
    let _ = tx.send(());
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}
