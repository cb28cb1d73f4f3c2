//! e2e: the admin port's dashboard in headless Chromium. The real `weir` serves the
//! quickstart Routes (deploy/examples/quickstart/routes.yaml) in front of demo origins, plus
//! two invalid Routes; `e2e/dashboard/check.mjs` (playwright-core driving Debian's
//! `/usr/bin/chromium`) opens the page and checks it: no console error, the Routes listed,
//! the invalid Routes' messages shown, Tab reaching the controls, and the traffic this test
//! sends showing up in the numbers and the chart. It writes a screenshot into the test's
//! temp dir (copied to `$WEIR_DASHBOARD_SCREENSHOT` when set, for the docs).
//!
//! Needs `chromium`, `node` and `npm` (`.ci/run` installs them); the test fails, never
//! skips, when one is missing. `npm ci` runs in e2e/dashboard when its node_modules lacks
//! playwright-core.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use weir_e2e::{ConfigDir, DemoOrigin, WeirProcess, http_get, service_yaml, workspace_root};

const CHROMIUM: &str = "/usr/bin/chromium";

/// One Route with a backend that does not exist (served, `ResolvedRefs=False`) and one
/// whose regex does not compile (not served, `Accepted=False`).
const INVALID_ROUTES: &str = r#"---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: broken}
spec:
  rules:
    - name: missing
      matches: [{path: {type: Prefix, value: /broken}}]
      backends: [{service: does-not-exist, port: 80}]
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: bad-regex}
spec:
  rules:
    - matches: [{path: {type: RegularExpression, value: "/x/(["}}]
      backends: [{service: users, port: 80}]
"#;

/// Runs `program args` in `dir` and fails the test with its output unless it succeeds.
fn run(program: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(program).args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!("cannot run {program} ({e}); install it (.ci/run does: apt-get install nodejs npm)")
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The check script's directory, with playwright-core installed from the lock file.
fn check_dir() -> PathBuf {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)"
    );
    let dir = workspace_root().join("e2e/dashboard");
    run("node", &["--version"], &dir);
    if !dir.join("node_modules/playwright-core/package.json").exists() {
        run("npm", &["ci", "--no-audit", "--no-fund", "--ignore-scripts"], &dir);
    }
    dir
}

/// The node process running check.mjs, its stdout read line by line on a thread.
struct Check {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
}

impl Check {
    fn start(dir: &Path, out: &Path, weir: &WeirProcess) -> Check {
        let stderr = out.join("check.stderr");
        let mut child = Command::new("node")
            .arg("check.mjs")
            .current_dir(dir)
            .env("ADMIN_URL", format!("http://{}", weir.admin_addr))
            .env("OUT_DIR", out)
            .env("EXPECT_ROUTES", "default/orders,default/split,default/users")
            .env("INVALID_ROUTE", "default/bad-regex")
            .env("INVALID_MESSAGE", "regex \"/x/([\" is invalid")
            .env("TRAFFIC_ROUTE", "default/orders")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("starting node check.mjs");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Check { child, stdin, lines, stderr }
    }

    /// The next line starting with `want` (within 60 s); fails on `FAIL` or end of output.
    fn expect(&self, want: &str, weir: &WeirProcess) -> String {
        let line = tokio::task::block_in_place(|| self.lines.recv_timeout(Duration::from_secs(60)));
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        match line {
            Ok(line) if line.starts_with(want) => line[want.len()..].trim().to_owned(),
            other => panic!(
                "check.mjs: expected {want}, got {other:?}\nstderr:\n{stderr}\nweir log:\n{}",
                weir.log()
            ),
        }
    }
}

impl Drop for Check {
    fn drop(&mut self) {
        // Stops this node process by its pid (its browser exits with it).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/debug/stats` entry of `route`.
async fn route_stats(weir: &WeirProcess, route: &str) -> serde_json::Value {
    let reply = weir.admin("/debug/stats").await.unwrap();
    assert_eq!(reply.status, 200);
    let stats = reply.json().unwrap();
    stats["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == route)
        .cloned()
        .unwrap_or_else(|| panic!("{route} not in /debug/stats: {stats}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_routes_problems_and_traffic_in_chromium() {
    let dir = check_dir();

    let mut origins = Vec::new();
    let mut services = String::new();
    for (service, backend) in
        [("orders", "orders-v1"), ("orders-canary", "orders-v2"), ("users", "users-v1")]
    {
        let origin = DemoOrigin::start(backend).await.unwrap();
        services.push_str(&service_yaml(service, origin.addr.port()));
        origins.push(origin);
    }
    let routes =
        std::fs::read_to_string(workspace_root().join("deploy/examples/quickstart/routes.yaml"))
            .unwrap();
    let config = ConfigDir::new("dashboard").unwrap();
    config.write("services.yaml", &services).unwrap();
    config.write("routes.yaml", &routes).unwrap();
    config.write("invalid.yaml", INVALID_ROUTES).unwrap();
    let weir = WeirProcess::start(config.path()).await.unwrap();

    // The assets are served from the binary with their types and a strict CSP.
    for (path, ty) in [("/", "text/html"), ("/dashboard.js", "text/javascript")] {
        let reply = weir.admin(path).await.unwrap();
        assert_eq!(reply.status, 200, "{path}");
        assert!(reply.headers["content-type"].to_str().unwrap().starts_with(ty), "{path}");
        let csp = reply.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self';"), "{csp}");
    }
    let before = route_stats(&weir, "default/orders").await;

    let out = ConfigDir::new("dashboard-out").unwrap();
    let mut check = Check::start(&dir, out.path(), &weir);
    let shown: u64 = check.expect("READY", &weir).parse().unwrap();
    assert_eq!(shown, before["requests"].as_u64().unwrap(), "the page's count is the server's");

    // 12 answered requests and 3 that the origin fails with 503, all on Route orders.
    for i in 0..15 {
        let path = if i % 5 == 4 { "/api/orders/1?fail=503" } else { "/api/orders/1" };
        let reply = http_get(weir.http_addr, "localhost", path).await.unwrap();
        assert_eq!(reply.status, if i % 5 == 4 { 503 } else { 200 }, "{path}");
    }
    let after = route_stats(&weir, "default/orders").await;
    let sent = after["requests"].as_u64().unwrap() - shown;
    assert_eq!(sent, 15, "{after}");
    let codes: Vec<u64> = (0..5).map(|i| after["codes"][i].as_u64().unwrap()).collect();
    let codes_before: Vec<u64> = (0..5).map(|i| before["codes"][i].as_u64().unwrap()).collect();
    assert_eq!(codes[1] - codes_before[1], 12, "{after}");
    assert_eq!(codes[4] - codes_before[4], 3, "{after}");
    writeln!(check.stdin, "SENT {sent}").unwrap();
    check.stdin.flush().unwrap();

    let result: serde_json::Value = serde_json::from_str(&check.expect("OK", &weir)).unwrap();
    assert_eq!(result["after"], shown + 15, "{result}");
    assert_ne!(result["rateBefore"], result["rateAfter"], "{result}");
    let screenshot = out.path().join("dashboard.png");
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{}", png.len());
    if let Some(copy) = std::env::var_os("WEIR_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&screenshot, copy).unwrap();
    }
    drop(check);
    drop(origins);
}
