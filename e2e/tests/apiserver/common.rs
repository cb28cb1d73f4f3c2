//! Fixtures shared by the API server double's tests.

use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::ObjectMeta;
use weir_crds::{BackendRef, Route, RouteRule, RouteSpec};

/// A Route for `host` sending everything to Service `orders` port 80.
pub fn route(name: &str, host: &str) -> Route {
    let mut r = Route::new(
        name,
        RouteSpec {
            hosts: vec![host.to_owned()],
            rules: vec![RouteRule {
                backends: vec![BackendRef {
                    service: "orders".into(),
                    port: Some(80),
                    weight: None,
                    ..BackendRef::default()
                }],
                ..RouteRule::default()
            }],
            ..RouteSpec::default()
        },
    );
    r.metadata.namespace = None;
    r
}

/// A Lease held by `holder`.
pub fn lease(name: &str, holder: &str) -> Lease {
    Lease {
        metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }),
    }
}

/// The next item of a stream, failing after 10 s.
pub async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("no stream item within 10 s")
}

/// A resourceVersion as a number.
pub fn rv_of(meta: &ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .expect("resourceVersion")
        .parse()
        .expect("numeric resourceVersion")
}

/// The `kube::Error::Api` status code of a failed call.
pub fn api_code<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}
