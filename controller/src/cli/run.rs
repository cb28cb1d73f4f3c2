//! The wiring behind `weir run`, one for both modes: a configuration source (the config
//! directory, or the Kubernetes watches with the status writer) feeding the publisher, the
//! admin server and the listeners. When any of these essential tasks stops on its own, the
//! process stops everything and exits non-zero, naming the task.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_dataplane::DataPlane;

use super::{RunArgs, RuntimePlan, cache_runtime, per_core, rate_limit_runtime, shutdown_signal};
use crate::publish::{Publisher, Shared};
use crate::standalone::DirSource;

/// How long `weir run` waits for the API server at startup before giving up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the source may take to stop (releasing the lease) once asked to.
const SOURCE_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the configuration comes from.
enum Mode {
    /// `--config-dir`.
    Standalone(PathBuf),
    /// The cluster.
    Kubernetes(kube::Client),
}

impl Mode {
    fn observe(&self) -> crate::observe::Mode {
        match self {
            Mode::Standalone(_) => crate::observe::Mode::Standalone,
            Mode::Kubernetes(_) => crate::observe::Mode::Kubernetes,
        }
    }
}

/// The HTTP listening socket(s).
enum Http {
    /// One socket, served by the main runtime.
    Shared(TcpListener),
    /// One `SO_REUSEPORT` socket per worker runtime (`--runtime per-core`).
    PerCore(Vec<std::net::TcpListener>),
}

impl Http {
    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match self {
            Http::Shared(tcp) => tcp.local_addr(),
            Http::PerCore(sockets) => match sockets.first() {
                Some(socket) => socket.local_addr(),
                None => Err(std::io::Error::other("no HTTP socket")),
            },
        }
    }
}

/// One essential task: its name (for the exit message) and its handle.
pub struct Essential {
    /// What it is, e.g. `the configuration source`.
    pub name: &'static str,
    /// The task; its `Err` is the reason it failed.
    pub task: JoinHandle<anyhow::Result<()>>,
}

/// Why an essential task stopped, as the process reports it.
fn stopped(
    name: &str,
    result: Result<anyhow::Result<()>, tokio::task::JoinError>,
) -> anyhow::Error {
    match result {
        Ok(Ok(())) => anyhow::anyhow!("{name} stopped unexpectedly"),
        Ok(Err(e)) => e.context(format!("{name} failed")),
        Err(e) if e.is_panic() => anyhow::anyhow!("{name} panicked: {e}"),
        Err(e) => anyhow::anyhow!("{name} was cancelled: {e}"),
    }
}

/// Waits for `shutdown` or for the first essential task to stop on its own. Returns the
/// failure (`None` after `shutdown`) and the tasks still running.
pub async fn supervise(
    tasks: Vec<Essential>,
    shutdown: impl Future<Output = ()>,
) -> (Option<anyhow::Error>, Vec<Essential>) {
    if tasks.is_empty() {
        shutdown.await;
        return (None, tasks);
    }
    let mut names = Vec::new();
    let mut handles = Vec::new();
    for t in tasks {
        names.push(t.name);
        handles.push(t.task);
    }
    let any = futures_util::future::select_all(handles.iter_mut());
    tokio::select! {
        () = shutdown => {
            let rest = names.into_iter().zip(handles).map(|(name, task)| Essential { name, task });
            (None, rest.collect())
        }
        (result, i, _) = any => {
            let error = stopped(names[i], result);
            let rest = names
                .into_iter()
                .zip(handles)
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (name, task))| Essential { name, task });
            (Some(error), rest.collect())
        }
    }
}

/// `weir run`: standalone with `--config-dir`, else Kubernetes mode (an error when no
/// cluster is configured or reachable). Returns the process exit code; an `Err` (a failed
/// start, or an essential task that stopped) exits non-zero.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let namespace = args.controller_namespace();
    let mode = match args.config_dir.clone() {
        Some(dir) if !dir.is_dir() => {
            anyhow::bail!("--config-dir {}: not a directory", dir.display())
        }
        Some(dir) => Mode::Standalone(dir),
        None => Mode::Kubernetes(
            crate::kube::connect(args.kubeconfig.as_deref(), CONNECT_TIMEOUT)
                .await
                .context("Kubernetes mode (no --config-dir)")?,
        ),
    };
    let rate_limits = rate_limit_runtime(&args).await?;
    let cache = cache_runtime(&args, &rate_limits);
    let dataplane = DataPlane::with_cache(
        rate_limits,
        crate::observe::observability(&args, mode.observe())?,
        cache,
    );
    let shared = Shared::new(Arc::clone(&dataplane));
    let http = match RuntimePlan::of(&args) {
        RuntimePlan::PerCore(workers) => {
            Http::PerCore(per_core::bind_http(args.http_addr, workers)?)
        }
        RuntimePlan::Single | RuntimePlan::WorkStealing(_) => Http::Shared(
            TcpListener::bind(args.http_addr)
                .await
                .with_context(|| format!("binding --http-addr {}", args.http_addr))?,
        ),
    };
    let http_addr = http.local_addr()?;
    let admin = TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("binding --admin-addr {}", args.admin_addr))?;

    let (stop, stop_rx) = watch::channel(false);
    let source: JoinHandle<anyhow::Result<()>> = match mode {
        Mode::Standalone(dir) => {
            tracing::info!(
                http = %http_addr, admin = %admin.local_addr()?,
                config_dir = %dir.display(), "weir starting in standalone mode"
            );
            let source = DirSource::new(dir, namespace)
                .with_default_certificate(args.default_certificate.clone())
                .with_publish_service(args.publish_service.clone());
            // Circuits opening and closing are logged (Kubernetes mode's status writer
            // also sends Events).
            let upstream_events = dataplane.registry.subscribe();
            tokio::spawn(crate::upstream_events::log_all(upstream_events, stop_rx.clone()));
            tokio::spawn(crate::standalone::run(
                source,
                Publisher::new(Arc::clone(&shared)),
                stop_rx.clone(),
            ))
        }
        Mode::Kubernetes(client) => {
            let mut options =
                crate::kube::KubeOptions::new(namespace.clone(), args.watch_namespaces.clone());
            options.default_certificate = args.default_certificate.clone();
            options.publish_service = args.publish_service.clone();
            tracing::info!(
                http = %http_addr, admin = %admin.local_addr()?, namespace = %namespace,
                watch_namespaces = ?args.watch_namespaces, identity = %options.lease.identity,
                "weir starting in Kubernetes mode"
            );
            let shared = Arc::clone(&shared);
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                crate::kube::run(client, options, shared, stop).await;
                Ok(())
            })
        }
    };
    let admin_task = {
        let (shared, stop) = (Arc::clone(&shared), stop_rx.clone());
        tokio::spawn(
            async move { crate::admin::serve(admin, shared, stop).await.map_err(Into::into) },
        )
    };
    let options = crate::serving::listener_options(&args);
    let (data_task, workers) = match http {
        Http::Shared(http) => {
            let task =
                crate::serving::spawn(dataplane, options, http, args.https_addr, stop_rx.clone());
            (tokio::spawn(async move { task.await.map_err(Into::into) }), None)
        }
        Http::PerCore(sockets) => {
            let (task, workers) =
                per_core::spawn(dataplane, options, sockets, args.https_addr, stop_rx.clone())?;
            (task, Some(workers))
        }
    };

    let tasks = vec![
        Essential { name: "the configuration source", task: source },
        Essential { name: "the admin server", task: admin_task },
        Essential { name: "the listeners", task: data_task },
    ];
    let shutdown = async {
        shutdown_signal().await;
        tracing::info!("shutting down");
        crate::serving::shutdown_delay(&shared, args.shutdown_delay).await;
    };
    let (failed, rest) = supervise(tasks, shutdown).await;
    if let Some(e) = &failed {
        tracing::error!("{e:#}; stopping");
    }
    let _ = stop.send(true);
    for t in rest {
        // Bounded: releasing the lease must not hold up the shutdown when the API is gone.
        match tokio::time::timeout(SOURCE_STOP_TIMEOUT, t.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("{}: {e:#}", t.name),
            Ok(Err(e)) => tracing::warn!("{}: {e}", t.name),
            Err(_) => tracing::warn!("{} did not stop within {SOURCE_STOP_TIMEOUT:?}", t.name),
        }
    }
    // Last, once the listeners drained: the upgraded (WebSocket) connections.
    crate::serving::close_upgraded(&shared.dataplane).await;
    crate::observe::flush_access_log(&shared.dataplane.observability).await;
    if let Some(tracing) = &shared.dataplane.observability.tracing {
        tracing.shutdown().await;
    }
    if let Some(workers) = workers {
        workers.release().await;
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn forever() -> JoinHandle<anyhow::Result<()>> {
        tokio::spawn(async {
            std::future::pending::<()>().await;
            Ok(())
        })
    }

    #[tokio::test]
    async fn a_dying_essential_task_is_reported_by_name() {
        for (task, expected) in [
            (
                tokio::spawn(async {
                    if true {
                        panic!("boom");
                    }
                    Ok(())
                }),
                "the configuration source panicked",
            ),
            (
                tokio::spawn(async { anyhow::Ok(()) }),
                "the configuration source stopped unexpectedly",
            ),
            (
                tokio::spawn(async { Err(anyhow::anyhow!("disk gone")) }),
                "the configuration source failed: disk gone",
            ),
        ] {
            let tasks = vec![
                Essential { name: "the admin server", task: forever() },
                Essential { name: "the configuration source", task },
            ];
            let (failed, rest) = supervise(tasks, std::future::pending()).await;
            let message = format!("{:#}", failed.unwrap());
            assert!(message.starts_with(expected), "{message}");
            assert_eq!(rest.len(), 1);
            assert_eq!(rest[0].name, "the admin server");
            rest[0].task.abort();
        }
    }

    #[tokio::test]
    async fn a_shutdown_is_no_failure_and_hands_back_every_task() {
        let tasks = vec![Essential { name: "the listeners", task: forever() }];
        let (failed, rest) = supervise(tasks, async {}).await;
        assert!(failed.is_none());
        assert_eq!(rest.len(), 1);
        rest[0].task.abort();
    }
}
