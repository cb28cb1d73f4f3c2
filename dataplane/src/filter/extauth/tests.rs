//! `check` without an auth service that answers: targets that cannot be asked go by
//! `onError`, and the client's copies of identity headers never survive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::*;
use crate::proxy::ProxyError;
use crate::snapshot::{Backend, BackendKey, BackendTable};

fn settings(target: ExtAuthTarget, allow_on_error: bool) -> ExtAuthSettings {
    ExtAuthSettings {
        source: ObjectKey::new("shop", "auth"),
        target,
        timeout: Duration::from_secs(5),
        forward_headers: None,
        upstream_headers: Box::new([HeaderName::from_static("x-user-id")]),
        allow_on_error,
    }
}

fn parts() -> http::request::Parts {
    http::Request::get("/x")
        .header("host", "api.test")
        .header("x-user-id", "forged")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

async fn check(ext: &ExtAuth, ctx: &mut RequestContext<'_>) -> Result<Flow, ProxyError> {
    let mut request = parts();
    ext.strip_upstream_headers(&mut request.headers);
    assert!(!request.headers.contains_key("x-user-id"));
    ext.check(&mut request, ctx).await
}

#[tokio::test]
async fn targets_that_cannot_be_asked_follow_on_error() {
    let not_http = ExtAuthTarget::Url("ftp://auth.test/check".parse().unwrap());
    let relative = ExtAuthTarget::Url("/check".parse().unwrap());
    let service = ExtAuthTarget::Service {
        backend: BackendId(0),
        path_and_query: "/check".parse().unwrap(),
        host: HeaderValue::from_static("auth.shop.svc:80"),
    };
    let key = BackendKey { namespace: "shop".into(), service: "auth".into(), port: 80 };
    let empty = BackendTable { backends: vec![Backend::new(key.clone(), vec![])] };
    let unresolved = BackendTable { backends: vec![Backend::unresolved(key, "no such Service")] };
    let userinfo = ExtAuthTarget::Url("http://user:secret@auth.test/check".parse().unwrap());
    let cases: [(&str, ExtAuthTarget, Option<&BackendTable>); 6] = [
        ("is not an absolute http(s) URL", not_http, None),
        ("is not an absolute http(s) URL", relative, None),
        ("without user information", userinfo, None),
        ("not in the backend table", service.clone(), None),
        ("has no ready endpoint", service.clone(), Some(&empty)),
        ("no such Service", service, Some(&unresolved)),
    ];
    for (expected, target, backends) in cases {
        let deny = ExtAuth::new(settings(target.clone(), false));
        let mut ctx = RequestContext { backends, ..RequestContext::default() };
        match check(&deny, &mut ctx).await {
            Err(ProxyError::AuthUnavailable { reason }) => {
                assert!(reason.contains(expected) && reason.contains("shop/auth"), "{reason}");
                assert!(!reason.contains("secret"), "{reason}");
            }
            other => panic!("{expected}: {other:?}"),
        }
        assert!(!ctx.authenticated);
        let allow = ExtAuth::new(settings(target, true));
        let mut ctx = RequestContext { backends, ..RequestContext::default() };
        assert!(matches!(check(&allow, &mut ctx).await, Ok(Flow::Continue)), "{expected}");
        assert!(!ctx.authenticated, "failing open does not authenticate");
    }
    let metrics = crate::metrics::encode();
    for result in ["error_denied", "error_allowed"] {
        let line = format!("weir_ext_auth_decisions_total{{result=\"{result}\"}}");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}

#[test]
fn outcomes_have_stable_labels() {
    let labels: Vec<_> =
        [Outcome::Allowed, Outcome::Refused, Outcome::ErrorDenied, Outcome::ErrorAllowed]
            .iter()
            .map(|o| o.as_str())
            .collect();
    assert_eq!(labels, ["allowed", "refused", "error_denied", "error_allowed"]);
}
