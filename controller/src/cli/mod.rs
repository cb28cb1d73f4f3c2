//! The `weir` command line (`run`, `validate`, `crds`); the wiring behind `weir run` is in
//! [`run`].

mod per_core;
mod run;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use weir_dataplane::cache::CacheRuntime;
use weir_dataplane::filter::RateLimitRuntime;
use weir_dataplane::ratelimit::{RateLimiters, RedisOptions, RedisStore, TrustedProxies};

/// weir: a Kubernetes-native API gateway.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
// Parsed once at startup: the size of `RunArgs` costs nothing worth a Box (which would
// change what `main` matches on).
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the gateway: standalone with --config-dir, else against Kubernetes.
    Run(RunArgs),
    /// Load and compile files or directories offline; print every object's conditions.
    Validate(ValidateArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crds(CrdsArgs),
}

/// Flags of `weir crds`.
#[derive(Debug, Clone, Args)]
pub struct CrdsArgs {
    /// Instead of printing, write one `<plural>.weir.dev.yaml` file per CRD into this
    /// directory (what `make crds` does for `charts/weir/crds/`).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `weir run`; each also reads `WEIR_<FLAG>`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Standalone mode: serve the YAML under this directory and reload it on change.
    #[arg(long, env = "WEIR_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// Address of the HTTP listener.
    #[arg(long, env = "WEIR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Address of the HTTPS listener (bound only when a TLS route exists).
    #[arg(long, env = "WEIR_HTTPS_ADDR", default_value = "0.0.0.0:8443")]
    pub https_addr: SocketAddr,
    /// Address of the admin server (health, readiness, metrics, debug).
    #[arg(long, env = "WEIR_ADMIN_ADDR", default_value = "127.0.0.1:9901")]
    pub admin_addr: SocketAddr,
    /// Redis for shared rate-limit counters, e.g. redis://127.0.0.1:6379.
    #[arg(long, env = "WEIR_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Longest wait for one rate-limit decision from Redis (`100ms`, `1s`…); past it the
    /// Plugin's `onStoreError` applies.
    #[arg(long, env = "WEIR_REDIS_TIMEOUT", default_value = "100ms", value_parser = parse_timeout)]
    pub redis_timeout: std::time::Duration,
    /// Memory for the response cache (`cache` Plugins with `store: Memory`): a size such as
    /// `256Mi`, `1Gi` or a number of bytes; least-used entries are evicted past it.
    #[arg(long, env = "WEIR_CACHE_MEMORY", default_value = "256Mi", value_parser = parse_size)]
    pub cache_memory: u64,
    /// Proxies in front of the gateway whose `X-Forwarded-For` is believed by rate limits
    /// keyed by client IP: CIDRs or addresses, comma-separated (default: none).
    #[arg(long, env = "WEIR_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// The controller's own namespace (global Plugins, the leader Lease); default: the pod's
    /// service account namespace, else `weir-system`.
    #[arg(long, env = "WEIR_NAMESPACE")]
    pub namespace: Option<String>,
    /// Namespaces to watch, comma-separated (default: all).
    #[arg(long, env = "WEIR_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Log format.
    #[arg(long, env = "WEIR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Kubeconfig to use outside a cluster (default: in-cluster, then KUBECONFIG).
    #[arg(long, env = "WEIR_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Most open client connections over the HTTP and HTTPS listeners; past it a new
    /// connection is closed at once (default: no cap).
    #[arg(long, env = "WEIR_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Longest time for a TLS handshake, for the first request head of a connection, and
    /// for a request head once its first bytes arrived (slowloris protection).
    #[arg(long, env = "WEIR_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub header_read_timeout: std::time::Duration,
    /// A client connection with no request and nothing written for this long is closed
    /// (`0s`: never).
    #[arg(long, env = "WEIR_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration_or_zero)]
    pub idle_timeout: std::time::Duration,
    /// On SIGTERM/SIGINT: `/readyz` answers 503 at once, traffic keeps being served for
    /// this long, then the listeners stop and drain (replaces a preStop sleep).
    #[arg(long, env = "WEIR_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration_or_zero)]
    pub shutdown_delay: std::time::Duration,
    /// `NAMESPACE/NAME` of a `kubernetes.io/tls` Secret served to TLS clients whose SNI
    /// names no Route host, or who send none (default: such handshakes fail).
    #[arg(long, env = "WEIR_DEFAULT_CERTIFICATE", value_parser = parse_object_ref)]
    pub default_certificate: Option<crate::index::ObjectRef>,
    /// `NAMESPACE/NAME` of weir's own Service: its load-balancer addresses (else cluster
    /// IP) are what Gateways (`status.addresses`) and Ingresses (`status.loadBalancer`)
    /// report (default: none reported).
    #[arg(long, env = "WEIR_PUBLISH_SERVICE", value_parser = parse_object_ref)]
    pub publish_service: Option<crate::index::ObjectRef>,
    /// Per-request metrics (`weir_http_requests_total`, latency histograms…) on `/metrics`
    /// and the dashboard: `true` or `false`.
    #[arg(long, env = "WEIR_REQUEST_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub request_metrics: bool,
    /// Adds a `consumer` label to the per-request metrics (one series per Consumer);
    /// `--metrics-per-consumer` alone means `true`.
    #[arg(long, env = "WEIR_METRICS_PER_CONSUMER", default_value_t = false,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub metrics_per_consumer: bool,
    /// Access log: `stdout`, `off`, or a file path (reopened on SIGHUP). Default: `stdout`
    /// in standalone mode, `off` in Kubernetes mode.
    #[arg(long, env = "WEIR_ACCESS_LOG")]
    pub access_log: Option<String>,
    /// Access log line format.
    #[arg(long, env = "WEIR_ACCESS_LOG_FORMAT", value_enum, default_value_t = AccessLogFormatArg::Json)]
    pub access_log_format: AccessLogFormatArg,
    /// Export OpenTelemetry traces to this OTLP/HTTP (protobuf) collector, e.g.
    /// `http://otel-collector:4318` (`/v1/traces` is added when the URL has no path).
    #[arg(long, env = "WEIR_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Share of new traces sampled, 0.0-1.0; a client's `traceparent` sampled flag is
    /// followed (parent-based).
    #[arg(long, env = "WEIR_TRACE_SAMPLING", default_value_t = 1.0, value_parser = parse_ratio)]
    pub trace_sampling: f64,
    /// How the `WEIR_WORKER_THREADS` workers (default: one per core) serve traffic when
    /// there are several: `per-core` (each worker thread runs its own runtime with its own
    /// `SO_REUSEPORT` listening sockets) or `work-stealing` (one runtime whose workers share
    /// the listeners and steal each other's tasks). One worker is always one runtime.
    #[arg(long, env = "WEIR_RUNTIME", value_enum, default_value_t = RuntimeKind::default())]
    pub runtime: RuntimeKind,
}

/// `--runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum RuntimeKind {
    /// One current-thread runtime per worker thread, each with its own listening sockets
    /// (`SO_REUSEPORT`); the controller and admin server run on the main thread. The
    /// default: with two workers it served more requests per second than work-stealing
    /// for about the same CPU per request (`make bench`, figure `multicore`).
    #[default]
    PerCore,
    /// One multi-thread (work-stealing) runtime for everything.
    WorkStealing,
}

/// The runtimes `weir run` starts: what `main` builds and how `run` serves the listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimePlan {
    /// One worker: one current-thread runtime for everything.
    Single,
    /// `--runtime work-stealing` with this many workers: one multi-thread runtime.
    WorkStealing(usize),
    /// `--runtime per-core` with this many workers: a current-thread runtime on the main
    /// thread (controller, admin server), and one per worker thread serving the listeners.
    PerCore(usize),
}

impl RuntimePlan {
    /// The plan for `kind` with `workers` worker threads.
    pub fn new(kind: RuntimeKind, workers: usize) -> Self {
        match (workers, kind) {
            (0 | 1, _) => RuntimePlan::Single,
            (n, RuntimeKind::WorkStealing) => RuntimePlan::WorkStealing(n),
            (n, RuntimeKind::PerCore) => RuntimePlan::PerCore(n),
        }
    }

    /// The plan of `weir run` with `args` (`--runtime`, `WEIR_WORKER_THREADS`).
    pub fn of(args: &RunArgs) -> Self {
        Self::new(args.runtime, worker_threads())
    }

    /// The runtime `main` runs `weir run` on (in per-core mode, the main thread's; the
    /// listeners' runtimes are started by `run`).
    pub fn main_runtime(self) -> std::io::Result<tokio::runtime::Runtime> {
        match self {
            // One worker (as benchmarks pin it): a current-thread runtime, which avoids the
            // cross-thread wake-ups of a one-worker multi-thread scheduler.
            RuntimePlan::Single | RuntimePlan::PerCore(_) => {
                tokio::runtime::Builder::new_current_thread().enable_all().build()
            }
            RuntimePlan::WorkStealing(n) => {
                tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build()
            }
        }
    }
}

/// `--access-log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum AccessLogFormatArg {
    /// One JSON object per line.
    #[default]
    Json,
    /// A human-readable line.
    Text,
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a number from 0.0 to 1.0")),
    }
}

fn parse_object_ref(s: &str) -> Result<crate::index::ObjectRef, String> {
    match s.trim().split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(crate::index::ObjectRef::new(ns, name))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
    }
}

/// Where a pod finds its own namespace.
pub const SERVICE_ACCOUNT_NAMESPACE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

impl RunArgs {
    /// `--namespace`, else the pod's service account namespace, else `weir-system`.
    pub fn controller_namespace(&self) -> String {
        if let Some(ns) = self.namespace.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            return ns.to_owned();
        }
        std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
            .ok()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| crate::index::DEFAULT_CONTROLLER_NAMESPACE.to_owned())
    }
}

fn parse_duration_or_zero(s: &str) -> Result<std::time::Duration, String> {
    if s.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    weir_crds::parse_duration(s.trim()).map_err(|e| e.to_string())
}

fn parse_size(s: &str) -> Result<u64, String> {
    weir_crds::ByteSize::Quantity(s.trim().to_owned()).bytes()
}

fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    match weir_crds::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be positive".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// The rate-limit state of `weir run`: the Redis store of `--redis-url` (connected in the
/// background when Redis is down at start) and the `--trusted-proxies`.
pub async fn rate_limit_runtime(args: &RunArgs) -> anyhow::Result<RateLimitRuntime> {
    let trusted = TrustedProxies::parse(
        args.trusted_proxies.iter().map(|s| s.trim()).filter(|s| !s.is_empty()),
    )
    .map_err(|e| {
        anyhow::anyhow!("--trusted-proxies: {e} (use CIDRs or addresses, comma-separated)")
    })?;
    let redis = match args.redis_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        None => None,
        Some(url) => {
            let options = RedisOptions { timeout: args.redis_timeout, ..RedisOptions::default() };
            let store = RedisStore::connect(url, options).await.context("--redis-url")?;
            // The URL may hold a password: never logged.
            tracing::info!("rate limits with store: Redis use --redis-url");
            Some(store)
        }
    };
    Ok(RateLimitRuntime::new(RateLimiters::new(redis), trusted))
}

/// The response cache of `weir run`: `--cache-memory` bytes in memory, and the
/// `--redis-url` connections (shared with rate limiting) for `store: Redis`.
pub fn cache_runtime(args: &RunArgs, rate_limits: &RateLimitRuntime) -> CacheRuntime {
    CacheRuntime::new(args.cache_memory, rate_limits.limiters.redis().cloned())
}

/// Flags of `weir validate`.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// A YAML file or a directory (searched recursively); repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// The controller namespace assumed for global Plugins.
    #[arg(long, env = "WEIR_NAMESPACE")]
    pub namespace: Option<String>,
}

/// Installs the tracing subscriber: `RUST_LOG` filter (default `info`), text or JSON.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Worker threads for the runtime: `WEIR_WORKER_THREADS`, else the number of cores.
pub fn worker_threads() -> usize {
    std::env::var("WEIR_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// `weir run`. Returns the process exit code.
pub use run::run;

/// `weir validate`: prints the report, exit 1 when anything is invalid.
pub fn validate(args: &ValidateArgs) -> ExitCode {
    let report = crate::validate::validate(&args.files, args.namespace.as_deref());
    print!("{}", report.text);
    if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// `weir crds`: prints every CRD, or writes one file per CRD into `--dir`.
pub fn crds(args: &CrdsArgs) -> ExitCode {
    use weir_crds::generate::{crd_document, crd_file_names, crd_yaml, crds};
    let Some(dir) = &args.dir else {
        print!("{}", crd_yaml());
        return ExitCode::SUCCESS;
    };
    for (crd, name) in crds().iter().zip(crd_file_names()) {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, crd_document(crd)) {
            eprintln!("error: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn parses_run_flags_with_defaults() {
        let cli =
            Cli::try_parse_from(["weir", "run", "--config-dir", "x", "--watch-namespaces", "a,b"])
                .unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!(args.config_dir, Some(PathBuf::from("x")));
        assert_eq!(args.watch_namespaces, vec!["a", "b"]);
        assert_eq!(args.admin_addr, "127.0.0.1:9901".parse().unwrap());
        assert_eq!(args.http_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(args.log_format, LogFormat::Text);
        assert!(args.trusted_proxies.is_empty());
        assert_eq!(args.redis_timeout, std::time::Duration::from_millis(100));
        assert_eq!(args.cache_memory, 256 << 20);
        let cli = Cli::try_parse_from(["weir", "run", "--cache-memory", "1Gi"]).unwrap();
        let Command::Run(sized) = cli.command else { panic!("run") };
        assert_eq!(sized.cache_memory, 1 << 30);
        assert!(Cli::try_parse_from(["weir", "run", "--cache-memory", "lots"]).is_err());
        assert!(Cli::try_parse_from(["weir", "run", "--redis-timeout", "0s"]).is_err());
        let cli = Cli::try_parse_from(["weir", "run", "--redis-timeout", "2s"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!(args.redis_timeout, std::time::Duration::from_secs(2));
    }

    #[test]
    fn parses_the_listener_and_shutdown_flags() {
        use std::time::Duration;
        let cli = Cli::try_parse_from(["weir", "run"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!(args.max_connections, None);
        assert_eq!(args.header_read_timeout, Duration::from_secs(10));
        assert_eq!(args.idle_timeout, Duration::from_secs(60));
        assert_eq!(args.shutdown_delay, Duration::ZERO);
        assert_eq!(args.https_addr, "0.0.0.0:8443".parse().unwrap());
        let options = crate::serving::listener_options(&args);
        assert_eq!(options.idle_timeout, Some(Duration::from_secs(60)));
        let cli = Cli::try_parse_from([
            "weir",
            "run",
            "--max-connections",
            "100",
            "--header-read-timeout",
            "300ms",
            "--idle-timeout",
            "0",
            "--shutdown-delay",
            "5s",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!(args.max_connections, Some(100));
        assert_eq!(args.header_read_timeout, Duration::from_millis(300));
        assert_eq!(args.shutdown_delay, Duration::from_secs(5));
        let options = crate::serving::listener_options(&args);
        assert_eq!(options.idle_timeout, None);
        assert_eq!(options.max_connections, Some(100));
        for bad in [
            &["--max-connections", "0"][..],
            &["--header-read-timeout", "0s"],
            &["--idle-timeout", "soon"],
            &["--shutdown-delay", "-1s"],
        ] {
            let argv = ["weir", "run"].iter().chain(bad.iter());
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_runtime_flag_picks_the_plan_and_one_worker_is_always_one_runtime() {
        let cli = Cli::try_parse_from(["weir", "run"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!(args.runtime, RuntimeKind::default());
        for (flag, kind) in
            [("per-core", RuntimeKind::PerCore), ("work-stealing", RuntimeKind::WorkStealing)]
        {
            let cli = Cli::try_parse_from(["weir", "run", "--runtime", flag]).unwrap();
            let Command::Run(args) = cli.command else { panic!("not run") };
            assert_eq!(args.runtime, kind);
        }
        assert!(Cli::try_parse_from(["weir", "run", "--runtime", "threads"]).is_err());
        assert_eq!(RuntimePlan::new(RuntimeKind::PerCore, 1), RuntimePlan::Single);
        assert_eq!(RuntimePlan::new(RuntimeKind::WorkStealing, 1), RuntimePlan::Single);
        assert_eq!(RuntimePlan::new(RuntimeKind::PerCore, 4), RuntimePlan::PerCore(4));
        assert_eq!(RuntimePlan::new(RuntimeKind::WorkStealing, 2), RuntimePlan::WorkStealing(2));
    }

    #[test]
    fn the_default_certificate_is_namespace_slash_name() {
        let cli = Cli::try_parse_from(["weir", "run", "--default-certificate", "gw/wild"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!(args.default_certificate, Some(crate::index::ObjectRef::new("gw", "wild")));
        let cli = Cli::try_parse_from(["weir", "run"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!(args.default_certificate, None);
        assert_eq!(args.publish_service, None);
        let cli = Cli::try_parse_from(["weir", "run", "--publish-service", "weir/gw"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!(args.publish_service, Some(crate::index::ObjectRef::new("weir", "gw")));
        assert!(Cli::try_parse_from(["weir", "run", "--publish-service", "gw"]).is_err());
        for bad in ["wild", "/wild", "gw/", "a/b/c"] {
            let e = Cli::try_parse_from(["weir", "run", "--default-certificate", bad]).unwrap_err();
            assert!(e.to_string().contains("is not NAMESPACE/NAME"), "{e}");
        }
    }

    #[tokio::test]
    async fn trusted_proxies_are_parsed_and_checked() {
        let cli = Cli::try_parse_from([
            "weir",
            "run",
            "--config-dir",
            "x",
            "--trusted-proxies",
            "10.0.0.0/8, 192.0.2.7",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        let runtime = rate_limit_runtime(&args).await.unwrap();
        assert!(runtime.trusted.contains("10.1.2.3".parse().unwrap()));
        assert!(runtime.trusted.contains("192.0.2.7".parse().unwrap()));
        assert!(!runtime.trusted.contains("192.0.2.8".parse().unwrap()));
        assert!(runtime.limiters.redis().is_none());
        let cli = Cli::try_parse_from(["weir", "run", "--trusted-proxies", "10.0.0.0/33"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        let e = rate_limit_runtime(&args).await.unwrap_err().to_string();
        assert!(e.starts_with("--trusted-proxies:"), "{e}");
        let cli = Cli::try_parse_from(["weir", "run", "--redis-url", "http://x"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        let e = format!("{:#}", rate_limit_runtime(&args).await.unwrap_err());
        assert!(e.contains("--redis-url") && e.contains("scheme"), "{e}");
    }

    #[test]
    fn the_controller_namespace_comes_from_the_flag_else_a_default() {
        let cli = Cli::try_parse_from(["weir", "run", "--namespace", "gw"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!(args.controller_namespace(), "gw");
        assert_eq!(args.config_dir, None);
        let cli = Cli::try_parse_from(["weir", "run"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        let expected = std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
            .map(|n| n.trim().to_owned())
            .unwrap_or_else(|_| "weir-system".to_owned());
        assert_eq!(args.controller_namespace(), expected);
    }

    #[test]
    fn parses_validate_and_crds() {
        let cli = Cli::try_parse_from(["weir", "validate", "-f", "a.yaml", "-f", "dir"]).unwrap();
        let Command::Validate(args) = cli.command else { panic!("not validate") };
        assert_eq!(args.files, vec![PathBuf::from("a.yaml"), PathBuf::from("dir")]);
        assert!(Cli::try_parse_from(["weir", "validate"]).is_err());
        assert!(matches!(
            Cli::try_parse_from(["weir", "crds"]).unwrap().command,
            Command::Crds(CrdsArgs { dir: None })
        ));
    }
}
