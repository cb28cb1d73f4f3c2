//! compile() for authentication: jwt/keyAuth Plugins and Consumers become filters; global
//! authentication and the Route opt-out; fail closed on missing Plugins; last good Plugins;
//! Consumer credential problems; no secret in the snapshot's views.

use std::sync::Arc;

use http::{HeaderMap, Method};
use weir_dataplane::filter::Authenticate;
use weir_dataplane::router::describe_snapshot;
use weir_dataplane::{Filter, RequestView, Snapshot};

use super::*;
use crate::compile::conditions::{ACCEPTED, RESOLVED_REFS};

const FIXTURE: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: idp-jwks, namespace: weir-system}
stringData:
  jwks.json: '{"keys":[{"kty":"RSA","kid":"k1","use":"sig","alg":"RS256","e":"AQAB","n":"2LzTEswd4DM6l6Snp_m0hkb9ns18vG4SWzN-Zvn_EAFkpzZCzQmPcelSxHuo4fh3qUAOO-kM1RiwU-J-MPeHF5o5UhP4SMqi8wT98KSZ_Px9MlpBXVsOcV0Jr5f5ZsGpcpF5eoOYTsDuBbRY6hQcx0c_toRKYbHE8t7u7T9t_teTpSD1K-_QwvOWAIcnDTte-YdTyOBxpxvlArrCb_WViwL0MyFs_VVUTo11zAmnY_dTcSkEz65lFQihdU-H6_aoku8ybGDY_Dr_wMe---jWf1gZx4tnYDl-xWAbkQ2_082vKsClOUsosA-c4vnoT1HdFzPDLdNGwuQwfwy4RCGCFQ"}]}'
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: global-jwt, namespace: weir-system}
spec:
  global: true
  jwt: {algorithms: [RS256], issuer: https://idp.test, jwksSecretRef: {name: idp-jwks}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: keys}
spec:
  keyAuth: {header: x-api-key}
---
apiVersion: v1
kind: Secret
metadata: {name: mobile-key}
stringData: {key: the-mobile-api-key}
---
apiVersion: v1
kind: Secret
metadata: {name: mobile-jwt}
stringData:
  key: mobile-issuer
  algorithm: RS256
  publicKey: |
      -----BEGIN PUBLIC KEY-----
      MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA2LzTEswd4DM6l6Snp/m0
      hkb9ns18vG4SWzN+Zvn/EAFkpzZCzQmPcelSxHuo4fh3qUAOO+kM1RiwU+J+MPeH
      F5o5UhP4SMqi8wT98KSZ/Px9MlpBXVsOcV0Jr5f5ZsGpcpF5eoOYTsDuBbRY6hQc
      x0c/toRKYbHE8t7u7T9t/teTpSD1K+/QwvOWAIcnDTte+YdTyOBxpxvlArrCb/WV
      iwL0MyFs/VVUTo11zAmnY/dTcSkEz65lFQihdU+H6/aoku8ybGDY/Dr/wMe+++jW
      f1gZx4tnYDl+xWAbkQ2/082vKsClOUsosA+c4vnoT1HdFzPDLdNGwuQwfwy4RCGC
      FQIDAQAB
      -----END PUBLIC KEY-----
---
apiVersion: v1
kind: Secret
metadata: {name: broken-jwt}
stringData: {key: x, algorithm: ES256, publicKey: not-a-pem}
---
apiVersion: weir.dev/v1alpha1
kind: Consumer
metadata: {name: mobile}
spec:
  username: mobile-app
  tier: pro
  credentials:
    - apiKey: {secretRef: {name: mobile-key}}
    - apiKey: {secretRef: {name: not-created-yet}}
    - jwt: {secretRef: {name: mobile-jwt}}
---
apiVersion: weir.dev/v1alpha1
kind: Consumer
metadata: {name: broken}
spec:
  credentials:
    - jwt: {secretRef: {name: broken-jwt}}
---
apiVersion: v1
kind: Secret
metadata: {name: elsewhere-key, namespace: other}
stringData: {key: the-other-namespace-key}
---
apiVersion: weir.dev/v1alpha1
kind: Consumer
metadata: {name: elsewhere, namespace: other}
spec:
  credentials:
    - apiKey: {secretRef: {name: elsewhere-key}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: api}
spec:
  hosts: [api.test]
  rules:
    - backends: [{service: web, port: 80}]
    - name: keys
      matches: [{path: {value: /keys}}]
      plugins: [keys]
      backends: [{service: web, port: 80}]
    - name: gone
      matches: [{path: {value: /gone}}]
      plugins: [does-not-exist]
      backends: [{service: web, port: 80}]
---
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: public}
spec:
  hosts: [public.test]
  skipGlobalPlugins: [jwt]
  rules:
    - backends: [{service: web, port: 80}]
"#;

fn filters(c: &Compiled, host: &str, path: &str) -> Arc<[Filter]> {
    let headers = HeaderMap::new();
    let view = RequestView { method: &Method::GET, host, path, query: None, headers: &headers };
    let m = c.routes.find(&view).expect("route");
    Arc::clone(&m.rule.action.filters)
}

fn authenticate(f: &[Filter]) -> &Authenticate {
    match f {
        [Filter::Authenticate(a)] => a,
        other => panic!("expected one Authenticate filter, got {other:?}"),
    }
}

#[test]
fn global_jwt_protects_every_route_unless_it_opts_out() {
    let c = compile(&load_str(FIXTURE), &Memory::default());
    let api = status(&c, Kind::Route, "default", "api");
    let a = filters(&c, "api.test", "/");
    let auth = authenticate(&a);
    assert!(auth.jwt.is_some() && auth.key_auth.is_none());
    // Rule-level keyAuth adds to the global jwt: either credential authenticates.
    let k = filters(&c, "api.test", "/keys");
    let auth = authenticate(&k);
    let key_auth = auth.key_auth.as_ref().expect("keyAuth");
    assert!(auth.jwt.is_some());
    let mobile = key_auth.consumers.find_api_key(b"the-mobile-api-key").expect("consumer");
    assert_eq!((&*mobile.username, mobile.tier.as_deref()), ("mobile-app", Some("pro")));
    assert!(key_auth.consumers.jwt_keys("mobile-issuer").len() == 1);
    // A consumer authenticates only on Routes of its own namespace.
    assert!(key_auth.consumers.find_api_key(b"the-other-namespace-key").is_none());
    let elsewhere = status(&c, Kind::Consumer, "other", "elsewhere");
    assert_cond(elsewhere, RESOLVED_REFS, "True", "ResolvedRefs", &[]);
    // A missing plugin fails closed, and says so.
    let g = filters(&c, "api.test", "/gone");
    assert!(matches!(&g[..], [Filter::Unavailable(m)] if m.contains("does-not-exist")), "{g:?}");
    assert_cond(api, RESOLVED_REFS, "False", "PluginNotFound", &["does-not-exist"]);
    // The opt-out: no filter, and visible in the status.
    assert!(filters(&c, "public.test", "/").is_empty());
    let public = status(&c, Kind::Route, "default", "public");
    let levels: Vec<(&str, &str, &str)> = public
        .effective_plugins
        .iter()
        .map(|p| (p.type_.as_str(), p.source.as_str(), p.level.as_str()))
        .collect();
    assert_eq!(levels, [("jwt", "weir-system/global-jwt", "skipped")]);
    assert_cond(public, ACCEPTED, "True", "Accepted", &[]);
}

#[test]
fn consumer_credential_problems_are_reported_and_only_those_credentials_are_unusable() {
    let c = compile(&load_str(FIXTURE), &Memory::default());
    let mobile = status(&c, Kind::Consumer, "default", "mobile");
    assert_cond(mobile, RESOLVED_REFS, "False", "SecretNotFound", &["not-created-yet"]);
    let broken = status(&c, Kind::Consumer, "default", "broken");
    assert_cond(broken, RESOLVED_REFS, "False", "InvalidCredential", &["broken-jwt"]);
    // The other routes are unaffected, and mobile's good key still works (checked above).
    let public = status(&c, Kind::Route, "default", "public");
    assert_cond(public, RESOLVED_REFS, "True", "ResolvedRefs", &[]);
}

#[test]
fn no_secret_reaches_the_snapshot_views() {
    let c = compile(&load_str(FIXTURE), &Memory::default());
    let snapshot = Snapshot {
        version: 1,
        routes: Arc::clone(&c.routes),
        backends: Arc::clone(&c.backends),
        identity_headers: Arc::clone(&c.identity_headers),
        tls: Arc::default(),
    };
    let json = describe_snapshot(&snapshot).to_string();
    let debug = format!("{:?}", c.routes);
    let hash: String = weir_dataplane::filter::consumers::hash_api_key(b"the-mobile-api-key")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for text in [&json, &debug] {
        assert!(!text.contains("the-mobile-api-key"), "key leaked");
        assert!(!text.contains(&hash), "hash leaked");
        assert!(!text.contains("MIIB"), "key material leaked");
    }
}

#[test]
fn a_broken_auth_plugin_keeps_its_last_good_version_and_a_deleted_one_fails_closed() {
    let index = load_str(FIXTURE);
    let first = compile(&index, &Memory::default());
    let mut edited = index.clone();
    let key = ObjectRef::new("default", "keys");
    let plugin = std::sync::Arc::make_mut(edited.plugins.get_mut(&key).unwrap());
    plugin.spec.key_auth = None; // no configuration at all: invalid
    plugin.metadata.generation = Some(2);
    let second = compile(&edited, &first.memory);
    let s = status(&second, Kind::Plugin, "default", "keys");
    assert_cond(s, ACCEPTED, "False", "Invalid", &["keeps serving"]);
    let k = filters(&second, "api.test", "/keys");
    assert!(authenticate(&k).key_auth.is_some(), "still protected by the last good version");

    edited.plugins.remove(&key);
    let third = compile(&edited, &second.memory);
    let k = filters(&third, "api.test", "/keys");
    assert!(matches!(&k[..], [Filter::Unavailable(_)]), "{k:?}");
}

#[test]
fn jwks_secret_missing_fails_closed_with_the_reason() {
    let mut index = load_str(FIXTURE);
    index.secrets.remove(&ObjectRef::new("weir-system", "idp-jwks"));
    let c = compile(&index, &Memory::default());
    let a = filters(&c, "api.test", "/");
    assert!(matches!(&a[..], [Filter::Unavailable(_)]), "{a:?}");
    let api = status(&c, Kind::Route, "default", "api");
    assert_cond(api, RESOLVED_REFS, "False", "PluginNotFound", &["idp-jwks"]);
    let public = status(&c, Kind::Route, "default", "public");
    assert_cond(public, RESOLVED_REFS, "True", "ResolvedRefs", &[]);
}
