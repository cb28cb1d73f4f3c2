//! The real `weir` binary as a child process: located in the cargo target directory,
//! started in standalone mode on free loopback ports, waited on until `/readyz` answers 200,
//! and killed (by pid) when dropped.

use std::ffi::OsString;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::{ConfigDir, Reply, free_addr, http_get};

/// The workspace root (the parent of the `e2e` crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Path of the `weir` binary: `$WEIR_BIN` if set; else next to the running test executable
/// (`target/debug/deps/..` → `target/debug/weir`); else `$CARGO_TARGET_DIR/debug/weir`; else
/// `<workspace>/target/debug/weir`. `make test` builds it first
/// (`cargo build --workspace --bins`).
pub fn weir_binary() -> anyhow::Result<PathBuf> {
    binary("weir", "WEIR_BIN")
}

/// Path of a binary built by the workspace (same search as [`weir_binary`], with `env_var`
/// as the override).
pub fn binary(name: &str, env_var: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(path));
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/debug/deps/<test>-<hash> → target/debug/<name>
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join(name));
        }
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("debug").join(name));
    }
    candidates.push(workspace_root().join("target").join("debug").join(name));
    candidates.into_iter().find(|p| p.is_file()).with_context(|| {
        format!(
            "binary `{name}` not found; build it first with \
             `cargo build --workspace --bins` (as `make test` does) or set {env_var}"
        )
    })
}

/// Runs `weir` with `args` to completion (for `weir validate`, `weir crds`).
pub fn run_weir(args: &[&str]) -> anyhow::Result<Output> {
    let bin = weir_binary()?;
    let child = Command::new(&bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    child.wait_with_output().context("waiting for weir")
}

/// Why a start attempt failed: the process exited (perhaps a port was taken; worth a
/// retry) or anything else (not worth one).
enum Start {
    Exited(anyhow::Error),
    Failed(anyhow::Error),
}

/// A running `weir run --config-dir DIR`, killed when dropped.
#[derive(Debug)]
pub struct WeirProcess {
    /// The proxy (`--http-addr`) address.
    pub http_addr: SocketAddr,
    /// The admin (`--admin-addr`) address.
    pub admin_addr: SocketAddr,
    /// The HTTPS (`--https-addr`) address, bound once a TLS route exists.
    pub https_addr: SocketAddr,
    child: Child,
    log_path: PathBuf,
    _log_dir: ConfigDir,
}

impl WeirProcess {
    /// Starts `weir run --config-dir config_dir` on free loopback ports and waits (up to 20 s)
    /// until `/readyz` answers 200. Retries with new ports if the process exits early
    /// (another process may have taken a port between reservation and bind).
    pub async fn start(config_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(&[OsString::from("--config-dir"), config_dir.as_os_str().to_owned()]).await
    }

    /// Starts `weir run <mode_args>` (e.g. `--kubeconfig PATH` for Kubernetes mode) like
    /// [`WeirProcess::start`]: free loopback ports, ready within 20 s, retried on early exit.
    pub async fn start_with(mode_args: &[OsString]) -> anyhow::Result<Self> {
        Self::start_with_env(mode_args, &[]).await
    }

    /// [`WeirProcess::start_with`] with extra environment variables for the process.
    pub async fn start_with_env(
        mode_args: &[OsString],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(mode_args, env).await {
                Ok(process) => return Ok(process),
                Err(Start::Exited(e)) if attempt < 3 => {
                    eprintln!("weir exited early (attempt {attempt}), retrying: {e:#}");
                }
                Err(Start::Exited(e) | Start::Failed(e)) => return Err(e),
            }
        }
    }

    async fn start_once(mode_args: &[OsString], env: &[(&str, &str)]) -> Result<Self, Start> {
        let bin = weir_binary().map_err(Start::Failed)?;
        let http_addr = free_addr().map_err(Start::Failed)?;
        let admin_addr = free_addr().map_err(Start::Failed)?;
        let https_addr = free_addr().map_err(Start::Failed)?;
        let log_dir = ConfigDir::new("log").map_err(Start::Failed)?;
        let log_path = log_dir.path().join("weir.log");
        let log = File::create(&log_path).context("creating weir log").map_err(Start::Failed)?;
        let stdout = log.try_clone().context("cloning log file").map_err(Start::Failed)?;
        let child = Command::new(&bin)
            .arg("run")
            .args(mode_args)
            .arg("--http-addr")
            .arg(http_addr.to_string())
            .arg("--admin-addr")
            .arg(admin_addr.to_string())
            .arg("--https-addr")
            .arg(https_addr.to_string())
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))
            .map_err(Start::Failed)?;
        let mut process =
            WeirProcess { http_addr, admin_addr, https_addr, child, log_path, _log_dir: log_dir };
        process.wait_ready(Duration::from_secs(20)).await?;
        Ok(process)
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), Start> {
        let step = Duration::from_millis(50);
        let rounds = limit.as_millis() / step.as_millis();
        for _ in 0..rounds {
            if let Some(status) = self.child.try_wait().map_err(|e| Start::Failed(e.into()))? {
                return Err(Start::Exited(anyhow::anyhow!(
                    "weir exited with {status} before ready; log:\n{}",
                    self.log()
                )));
            }
            if let Ok(reply) = http_get(self.admin_addr, "localhost", "/readyz").await
                && reply.status == 200
            {
                return Ok(());
            }
            tokio::time::sleep(step).await;
        }
        Err(Start::Failed(anyhow::anyhow!("weir not ready after {limit:?}; log:\n{}", self.log())))
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM to the process (by its pid), as Kubernetes does to stop a pod.
    pub fn terminate(&self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .context("running kill")?;
        anyhow::ensure!(status.success(), "kill -TERM {} failed: {status}", self.pid());
        Ok(())
    }

    /// Waits up to `limit` for the process to exit; its exit status, or `None` if it is
    /// still running.
    pub async fn wait_exit(
        &mut self,
        limit: Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let step = Duration::from_millis(20);
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(step).await;
        }
    }

    /// GET on the proxy port.
    pub async fn get(&self, host: &str, path: &str) -> anyhow::Result<Reply> {
        http_get(self.http_addr, host, path).await
    }

    /// GET on the admin port.
    pub async fn admin(&self, path: &str) -> anyhow::Result<Reply> {
        http_get(self.admin_addr, "localhost", path).await
    }

    /// `/debug/status` parsed as JSON.
    pub async fn status(&self) -> anyhow::Result<serde_json::Value> {
        let reply = self.admin("/debug/status").await?;
        anyhow::ensure!(reply.status == 200, "/debug/status answered {}", reply.status);
        reply.json()
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        // Kills this child by its pid (SIGKILL) and reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
