//! e2e: graceful shutdown of the real `weir` binary with `--shutdown-delay`: on SIGTERM,
//! `/readyz` turns 503 at once, requests keep succeeding during the delay, then the process
//! stops accepting, drains and exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::time::Duration;

use weir_e2e::{ConfigDir, EchoOrigin, WeirProcess, prefix_route_yaml, service_yaml};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readyz_503_keeps_serving_for_the_delay_then_exits() {
    let origin = EchoOrigin::start("orders").await.unwrap();
    let dir = ConfigDir::new("shutdown").unwrap();
    dir.write("services.yaml", &service_yaml("orders", origin.addr.port())).unwrap();
    dir.write("route.yaml", &prefix_route_yaml("orders", "/", "orders")).unwrap();
    let args: Vec<OsString> = ["--config-dir", &dir.path().display().to_string()]
        .into_iter()
        .chain(["--shutdown-delay", "5s"])
        .map(OsString::from)
        .collect();
    let mut weir = WeirProcess::start_with(&args).await.unwrap();
    assert_eq!(weir.get("localhost", "/a").await.unwrap().status, 200);
    assert_eq!(weir.admin("/readyz").await.unwrap().status, 200);

    weir.terminate().unwrap();
    // Not ready at once (polled: the signal is handled asynchronously).
    let mut not_ready = false;
    for _ in 0..100 {
        if let Ok(reply) = weir.admin("/readyz").await
            && reply.status == 503
        {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(not_ready, "readyz never turned 503; log:\n{}", weir.log());
    // Still serving traffic during the delay (several requests, new connections each).
    for i in 0..3 {
        let reply = weir.get("localhost", &format!("/during/{i}")).await.unwrap();
        assert_eq!(reply.status, 200, "request {i} during the delay; log:\n{}", weir.log());
        assert!(
            weir.wait_exit(Duration::from_millis(50)).await.unwrap().is_none(),
            "exited during the delay"
        );
    }
    // Then it exits on its own, successfully.
    let status = weir.wait_exit(Duration::from_secs(30)).await.unwrap();
    let status = status.unwrap_or_else(|| panic!("still running; log:\n{}", weir.log()));
    assert!(status.success(), "{status}; log:\n{}", weir.log());
    assert!(weir.get("localhost", "/after").await.is_err(), "still accepting after exit");
}
