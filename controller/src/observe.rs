//! The observability of `weir run` from its flags: per-request metrics, the access log
//! (reopened on SIGHUP) and OpenTelemetry tracing.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use weir_dataplane::observe::access_log::{
    AccessLog, AccessLogFormat, AccessLogOptions, AccessLogTarget,
};
use weir_dataplane::observe::otel::{Tracing, TracingOptions};
use weir_dataplane::observe::stats::RequestMetrics;
use weir_dataplane::server::Observability;

use crate::cli::{AccessLogFormatArg, RunArgs};

/// Which mode `weir run` is in (the access log's default differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--config-dir`: access log on stdout by default.
    Standalone,
    /// Kubernetes: access log off by default.
    Kubernetes,
}

/// Lines that may wait for the access-log writer before new ones are dropped.
pub const ACCESS_LOG_QUEUE: usize = 8192;

/// `--access-log` resolved for `mode`: `None` when off.
pub fn access_log_target(args: &RunArgs, mode: Mode) -> Option<AccessLogTarget> {
    let value = match args.access_log.as_deref().map(str::trim) {
        Some(v) => v,
        None if mode == Mode::Standalone => "stdout",
        None => "off",
    };
    match value {
        "" | "off" => None,
        "stdout" | "-" => Some(AccessLogTarget::Stdout),
        path => Some(AccessLogTarget::Path(PathBuf::from(path))),
    }
}

/// Starts what the flags ask for.
pub fn observability(args: &RunArgs, mode: Mode) -> anyhow::Result<Observability> {
    let metrics =
        args.request_metrics.then(|| Arc::new(RequestMetrics::new(args.metrics_per_consumer)));
    let access_log = match access_log_target(args, mode) {
        None => None,
        Some(target) => {
            let format = match args.access_log_format {
                AccessLogFormatArg::Json => AccessLogFormat::Json,
                AccessLogFormatArg::Text => AccessLogFormat::Text,
            };
            let shown = match &target {
                AccessLogTarget::Stdout => "stdout".to_owned(),
                AccessLogTarget::Path(p) => p.display().to_string(),
            };
            let log =
                AccessLog::start(AccessLogOptions { target, format, queue: ACCESS_LOG_QUEUE })
                    .with_context(|| format!("--access-log {shown}"))?;
            Some(log)
        }
    };
    let tracing = match args.otlp_endpoint.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
        None => None,
        Some(endpoint) => Some(
            Tracing::start(TracingOptions {
                endpoint: endpoint.to_owned(),
                sampling: args.trace_sampling,
                service_name: "weir".to_owned(),
            })
            .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint}: {e}"))?,
        ),
    };
    if let Some(log) = &access_log {
        spawn_reopen_on_sighup(Arc::clone(log));
    }
    Ok(Observability { metrics, access_log, tracing })
}

/// How long the end of a shutdown waits for the access log's last lines.
pub const ACCESS_LOG_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// At the end of a graceful shutdown (after the upgraded connections closed, whose
/// sessions log then): writes out the access log's queued lines, waiting at most
/// [`ACCESS_LOG_FLUSH`].
pub async fn flush_access_log(observability: &Observability) {
    if let Some(log) = &observability.access_log
        && !log.flush(ACCESS_LOG_FLUSH).await
    {
        tracing::warn!("the access log's last lines were not written within {ACCESS_LOG_FLUSH:?}");
    }
}

/// Reopens the access log file on every SIGHUP (logrotate's `postrotate`).
fn spawn_reopen_on_sighup(log: Arc<AccessLog>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: the access log will not be reopened");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reopening the access log");
            log.reopen();
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn run_args(flags: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["weir", "run"].iter().chain(flags)).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        args
    }

    #[test]
    fn the_access_log_defaults_to_stdout_standalone_and_off_in_a_cluster() {
        let args = run_args(&[]);
        assert_eq!(access_log_target(&args, Mode::Standalone), Some(AccessLogTarget::Stdout));
        assert_eq!(access_log_target(&args, Mode::Kubernetes), None);
        let args = run_args(&["--access-log", "off"]);
        assert_eq!(access_log_target(&args, Mode::Standalone), None);
        let args = run_args(&["--access-log", "/var/log/weir/access.log"]);
        assert_eq!(
            access_log_target(&args, Mode::Kubernetes),
            Some(AccessLogTarget::Path(PathBuf::from("/var/log/weir/access.log")))
        );
    }

    #[test]
    fn observability_flags_parse_and_bad_values_are_refused() {
        let args = run_args(&[]);
        assert!(args.request_metrics);
        assert!(!args.metrics_per_consumer);
        assert_eq!(args.trace_sampling, 1.0);
        assert_eq!(args.access_log_format, AccessLogFormatArg::Json);
        let args = run_args(&[
            "--request-metrics",
            "false",
            "--metrics-per-consumer",
            "--trace-sampling",
            "0.01",
            "--access-log-format",
            "text",
        ]);
        assert!(!args.request_metrics);
        assert!(args.metrics_per_consumer);
        assert_eq!(args.trace_sampling, 0.01);
        assert_eq!(args.access_log_format, AccessLogFormatArg::Text);
        assert!(run_args(&["--metrics-per-consumer", "true"]).metrics_per_consumer);
        assert!(!run_args(&["--metrics-per-consumer", "false"]).metrics_per_consumer);
        for bad in [
            &["--trace-sampling", "1.5"][..],
            &["--trace-sampling", "-0.1"],
            &["--request-metrics", "maybe"],
            &["--access-log-format", "xml"],
        ] {
            assert!(Cli::try_parse_from(["weir", "run"].iter().chain(bad)).is_err(), "{bad:?}");
        }
    }
}
