//! e2e: the real `weir` binary in Kubernetes mode (`weir run --kubeconfig FILE`) against
//! the API server double — or a real cluster when `WEIR_E2E_KUBECONFIG` names a kubeconfig
//! (objects go to its `default` namespace and are deleted at the end): a Route + Service +
//! EndpointSlice pointing at a local echo origin serves traffic, an EndpointSlice change is
//! followed, and an invalid Plugin is reported `Accepted=False` (in the status the
//! controller wrote) while the other routes keep working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::time::Duration;

use kube::Client;
use kube::api::DeleteParams;
use serde_json::{Value, json};
use weir_e2e::apiserver::ApiServer;
use weir_e2e::kubectl::api_for;
use weir_e2e::{ConfigDir, EchoOrigin, WeirProcess, poll_until, service_yaml};

const LIMIT: Duration = Duration::from_secs(15);

fn docs(yaml: &str) -> Vec<Value> {
    weir_e2e::kubectl::yaml_docs(yaml).unwrap()
}

async fn apply(client: &Client, value: &Value) -> Result<(), kube::Error> {
    weir_e2e::kubectl::apply(client, value, "e2e").await.map(|_| ())
}

fn route(name: &str, host: &str) -> Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Route", "metadata": {"name": name},
           "spec": {"hosts": [host], "rules": [{"backends": [{"service": "svc", "port": 80}]}]}})
}

/// The double, or a real cluster.
enum Cluster {
    Double(ApiServer, ConfigDir),
    Real(std::path::PathBuf),
}

impl Cluster {
    async fn start() -> Cluster {
        if let Some(path) = std::env::var_os("WEIR_E2E_KUBECONFIG") {
            return Cluster::Real(path.into());
        }
        let server = ApiServer::start().await.unwrap();
        let dir = ConfigDir::new("kubeconfig").unwrap();
        dir.write("kubeconfig.yaml", &server.kubeconfig_yaml()).unwrap();
        Cluster::Double(server, dir)
    }

    fn kubeconfig(&self) -> std::path::PathBuf {
        match self {
            Cluster::Double(_, dir) => dir.path().join("kubeconfig.yaml"),
            Cluster::Real(path) => path.clone(),
        }
    }

    async fn client(&self) -> Client {
        match self {
            Cluster::Double(server, _) => server.client(),
            Cluster::Real(path) => {
                let file = kube::config::Kubeconfig::read_from(path).unwrap();
                let config =
                    kube::Config::from_custom_kubeconfig(file, &Default::default()).await.unwrap();
                Client::try_from(config).unwrap()
            }
        }
    }
}

async fn wait_backend(weir: &WeirProcess, host: &str, backend: &str) {
    poll_until(LIMIT, &format!("{host} served by {backend}"), || async {
        let reply = weir.get(host, "/").await?;
        Ok((reply.status == 200 && reply.json()?["backend"] == backend).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nweir log:\n{}", weir.log()));
}

/// Polls until the object's condition `type_` is `status` for its current generation.
async fn wait_condition(
    client: &Client,
    kind: &str,
    name: &str,
    type_: &str,
    status: &str,
) -> Value {
    let api = api_for(client, &json!({"apiVersion": "weir.dev/v1alpha1", "kind": kind}));
    poll_until(LIMIT, &format!("{kind} {name} {type_}={status}"), || async {
        let obj = serde_json::to_value(api.get(name).await?)?;
        let current = obj["status"]["observedGeneration"] == obj["metadata"]["generation"];
        let found = obj["status"]["conditions"].as_array().and_then(|cs| {
            cs.iter().find(|c| c["type"] == type_ && c["status"] == status).cloned()
        });
        Ok(found.filter(|_| current))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_mode_serves_follows_endpoints_and_reports_invalid_plugins() {
    let cluster = Cluster::start().await;
    let client = cluster.client().await;
    let one = EchoOrigin::start("one").await.unwrap();
    let two = EchoOrigin::start("two").await.unwrap();
    for doc in docs(&service_yaml("svc", one.addr.port())) {
        apply(&client, &doc).await.unwrap();
    }
    apply(&client, &route("main", "main.test")).await.unwrap();
    apply(&client, &route("other", "other.test")).await.unwrap();

    let args = [
        OsString::from("--kubeconfig"),
        cluster.kubeconfig().into_os_string(),
        OsString::from("--namespace"),
        OsString::from("weir-system"),
    ];
    let weir = WeirProcess::start_with(&args).await.unwrap();
    wait_backend(&weir, "main.test", "one").await;
    let programmed = wait_condition(&client, "Route", "main", "Programmed", "True").await;
    assert!(programmed["lastTransitionTime"].is_string());

    // The EndpointSlice moves to the second origin: traffic follows.
    let slice = docs(&service_yaml("svc", two.addr.port()))
        .into_iter()
        .find(|d| d["kind"] == "EndpointSlice")
        .unwrap();
    apply(&client, &slice).await.unwrap();
    wait_backend(&weir, "main.test", "two").await;

    // An invalid Plugin: reported Accepted=False (read from the API), others keep working.
    let bad = json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Plugin", "metadata": {"name": "bad"},
        "spec": {"rateLimit": {"limit": "lots", "window": "1m"}}});
    match (&cluster, apply(&client, &bad).await) {
        (Cluster::Double(..), Ok(())) => {
            let accepted = wait_condition(&client, "Plugin", "bad", "Accepted", "False").await;
            assert_eq!(accepted["reason"], "Invalid");
            let message = accepted["message"].as_str().unwrap();
            assert!(message.contains("spec.rateLimit.limit"), "{message}");
        }
        // A real API server validates the schema and refuses it.
        (Cluster::Real(_), Err(kube::Error::Api(s))) => assert_eq!(s.code, 422),
        (_, other) => panic!("unexpected apply result: {other:?}"),
    }
    wait_backend(&weir, "other.test", "two").await;
    wait_backend(&weir, "main.test", "two").await;

    let metrics = weir.admin("/metrics").await.unwrap().text();
    assert!(metrics.contains("weir_leader 1"), "{metrics}");
    let status = weir.status().await.unwrap();
    assert_eq!(status["leader"], true, "{status}");
    assert_eq!(weir.admin("/readyz").await.unwrap().status, 200);

    if let Cluster::Double(server, _) = &cluster {
        // Losing the API server does not interrupt traffic.
        server.set_available(false);
        wait_backend(&weir, "main.test", "two").await;
        assert_eq!(weir.admin("/readyz").await.unwrap().status, 200);
        server.set_available(true);
    } else {
        for (kind, name) in [("Route", "main"), ("Route", "other"), ("Plugin", "bad")] {
            let api = api_for(&client, &json!({"apiVersion": "weir.dev/v1alpha1", "kind": kind}));
            let _ = api.delete(name, &DeleteParams::default()).await;
        }
        for doc in docs(&service_yaml("svc", one.addr.port())) {
            let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
            let _ = api_for(&client, &doc).delete(&name, &DeleteParams::default()).await;
        }
    }
    drop(weir);
    if let Cluster::Double(server, _) = cluster {
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_config_dir_or_cluster_exits_with_a_clear_error() {
    let dir = ConfigDir::new("nokube").unwrap();
    // A kubeconfig pointing at a closed loopback port: unreachable.
    let port = weir_e2e::free_port().unwrap();
    dir.write(
        "kubeconfig.yaml",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n\
             users: [{{name: u, user: {{}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\n\
             current-context: x\n"
        ),
    )
    .unwrap();
    let kubeconfig = dir.path().join("kubeconfig.yaml");
    let output = tokio::time::timeout(
        Duration::from_secs(40),
        tokio::task::spawn_blocking(move || {
            weir_e2e::run_weir(&[
                "run",
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--admin-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
        }),
    )
    .await
    .expect("weir run hung without a reachable cluster")
    .unwrap()
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach the Kubernetes API server"), "{stderr}");
}
