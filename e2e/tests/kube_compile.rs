//! e2e: a full compile in Kubernetes mode does not stall proxying. The real `weir` binary
//! runs against the API server double with a one-worker data plane
//! (`WEIR_WORKER_THREADS=1`) and [`ROUTES`] Routes; a client sends requests to a live Route
//! while a new Plugin forces a full recompile of all of them. The compile runs on a
//! blocking thread, so requests complete during it: counted against the compile's window
//! as weir logs it ("configuration published" with `compile_ms`), no time assertion.
//! With the compile on the async worker (the code before), the count is 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::fs::File;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use weir_e2e::apiserver::ApiServer;
use weir_e2e::{ConfigDir, EchoOrigin, free_addr, http_get, poll_until, service_yaml, weir_binary};

/// Routes besides the live one. The figure (100k) is used as is: the full compile
/// takes seconds in a debug build, far longer than one request.
const ROUTES: usize = 100_000;
/// Bounds of the whole test's waits (a debug build lists and compiles 100k Routes first).
const LIMIT: Duration = Duration::from_secs(90);
/// The client's bounds: at most this many requests, for at most `LIMIT`.
const MAX_REQUESTS: usize = 200_000;
/// Completions this close to the window's start are not counted: the client reads a
/// response a little after weir wrote it.
const MARGIN: Duration = Duration::from_millis(10);

fn route(name: &str, host: &str) -> Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Route",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"hosts": [host], "rules": [{"backends": [{"service": "svc", "port": 80}]}]}})
}

/// A "configuration published" line of weir's (text) log: when it was written and the
/// compile time it reports.
#[derive(Debug, Clone, Copy)]
struct Published {
    at: SystemTime,
    compile: Duration,
    routes: usize,
}

fn published(log: &str) -> Vec<Published> {
    let field = |line: &str, name: &str| -> Option<String> {
        let start = line.find(&format!(" {name}="))? + name.len() + 2;
        Some(line[start..].split_whitespace().next()?.to_owned())
    };
    log.lines()
        .filter(|l| l.contains("configuration published"))
        .filter_map(|line| {
            let stamp: Timestamp = line.split_whitespace().next()?.parse().ok()?;
            let at = SystemTime::from(stamp);
            let compile_ms: f64 = field(line, "compile_ms")?.parse().ok()?;
            let routes = field(line, "routes")?.parse().ok()?;
            Some(Published { at, compile: Duration::from_secs_f64(compile_ms / 1e3), routes })
        })
        .collect()
}

/// weir started here rather than by [`weir_e2e::WeirProcess`], which cannot pass an
/// environment variable (and this crate forbids `unsafe` `set_var`): killed and reaped on
/// drop.
struct Weir {
    child: Child,
    http_addr: SocketAddr,
    log_path: std::path::PathBuf,
    _dir: ConfigDir,
}

impl Weir {
    /// `weir run <args>` with one worker thread, ready within `LIMIT`.
    async fn start(args: &[OsString]) -> Weir {
        let dir = ConfigDir::new("log").unwrap();
        let log_path = dir.path().join("weir.log");
        let log = File::create(&log_path).unwrap();
        let http_addr = free_addr().unwrap();
        let admin_addr = free_addr().unwrap();
        let child = Command::new(weir_binary().unwrap())
            .arg("run")
            .args(args)
            .args(["--http-addr", &http_addr.to_string(), "--admin-addr", &admin_addr.to_string()])
            .args(["--https-addr", &free_addr().unwrap().to_string()])
            .env("WEIR_WORKER_THREADS", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut weir = Weir { child, http_addr, log_path, _dir: dir };
        poll_until(LIMIT, "weir ready", || async {
            let reply = http_get(admin_addr, "localhost", "/readyz").await?;
            Ok((reply.status == 200).then_some(()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));
        assert!(weir.child.try_wait().unwrap().is_none(), "weir exited:\n{}", weir.log());
        weir
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_compile_does_not_stall_a_one_worker_data_plane() {
    let server = ApiServer::start().await.unwrap();
    let dir = ConfigDir::new("kubeconfig").unwrap();
    dir.write("kubeconfig.yaml", &server.kubeconfig_yaml()).unwrap();
    let origin = EchoOrigin::start("live").await.unwrap();
    server.create_yaml(&service_yaml("svc", origin.addr.port())).unwrap();
    let mut objects = vec![route("live", "live.test")];
    objects.extend((0..ROUTES).map(|i| route(&format!("r{i}"), &format!("r{i}.test"))));
    server.create_objects(objects).unwrap();

    let args = [
        OsString::from("--kubeconfig"),
        dir.path().join("kubeconfig.yaml").into_os_string(),
        OsString::from("--namespace"),
        OsString::from("weir-system"),
    ];
    let weir = Weir::start(&args).await;
    let addr = weir.http_addr;
    poll_until(LIMIT, "live.test served", || async {
        Ok((http_get(addr, "live.test", "/").await?.status == 200).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));
    let before = published(&weir.log()).len();
    assert!(before > 0, "no 'configuration published' line:\n{}", weir.log());

    // The client: requests to live.test one after the other, bounded in count and time,
    // until told to stop; the completion time of each 200.
    let stop = Arc::new(AtomicBool::new(false));
    let client = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            let deadline = Instant::now() + LIMIT;
            let mut done = Vec::new();
            for _ in 0..MAX_REQUESTS {
                if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    break;
                }
                if let Ok(reply) = http_get(addr, "live.test", "/").await
                    && reply.status == 200
                {
                    done.push(SystemTime::now());
                }
            }
            done
        }
    });

    // A Plugin changes: every Route is compiled again (a full compile).
    server
        .create_yaml("apiVersion: weir.dev/v1alpha1\nkind: Plugin\nmetadata: {name: trigger}\nspec:\n  cache: {ttl: 1m}\n")
        .unwrap();
    let compile = poll_until(LIMIT, "the full compile published", || async {
        Ok(published(&weir.log()).into_iter().skip(before).find(|p| p.routes == ROUTES + 1))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));
    // A few requests after the compile, so the one in flight during it has completed.
    let after = Instant::now();
    while !client.is_finished() && after.elapsed() < Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let done = tokio::time::timeout(LIMIT, client).await.unwrap().unwrap();

    let (start, end) = (compile.at - compile.compile, compile.at);
    let during = done.iter().filter(|t| **t > start + MARGIN && **t < end).count();
    eprintln!(
        "full compile of {} routes: {:?}; requests completed: {} in all, {during} during the compile",
        compile.routes,
        compile.compile,
        done.len()
    );
    assert!(
        during > 0,
        "no request completed during the {:?} compile ({} in all)\nweir log:\n{}",
        compile.compile,
        done.len(),
        weir.log()
    );
    drop(weir);
    server.stop().await;
}
