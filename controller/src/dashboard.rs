//! The admin port's read-only dashboard: the page at `/` and its script and style sheet
//! (compiled into the binary, so it works offline), and `/debug/stats`, the per-Route
//! counters the page polls.
//!
//! The page reads only the JSON views the admin port already serves (`/debug/status`,
//! `/debug/snapshot`, `/debug/backends`) plus `/debug/stats`; none of them holds secret
//! data, and the page has no form or control that changes anything.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};
use weir_dataplane::observe::stats::DURATION_BUCKETS;
use weir_dataplane::snapshot::Snapshot;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard/dashboard.css");

/// The page's Content-Security-Policy: everything from the admin port itself, no inline
/// script or style, no framing, no form targets. `data:` images only for the empty
/// favicon (so the browser asks for no `/favicon.ico`).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's static asset at `path` (`/`, `/index.html`, `/dashboard.js`,
/// `/dashboard.css`), or `None` for any other path.
pub fn asset(path: &str) -> Option<Response<Full<Bytes>>> {
    let (body, content_type) = match path {
        "/" | "/index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/dashboard.js" => (DASHBOARD_JS, "text/javascript; charset=utf-8"),
        "/dashboard.css" => (DASHBOARD_CSS, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = StatusCode::OK;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Some(res)
}

/// Counters of one Route, summed over its rules.
#[derive(Default)]
struct RouteStats {
    codes: [u64; 5],
    rules: Vec<Value>,
    cumulative: Vec<u64>,
    sum: f64,
    count: u64,
}

/// `/debug/stats`: for every Route of `snapshot`, its responses by status class (summed
/// over its rules, and per rule) and its request duration histogram (cumulative counts
/// per bound of `bounds`, sum in seconds, count), sorted by Route; `timeMs` is the wall
/// clock of the reading (milliseconds since the epoch), for rates between two readings.
pub fn stats(snapshot: &Snapshot) -> Value {
    let mut routes: BTreeMap<String, RouteStats> = BTreeMap::new();
    for rule in snapshot.routes.rules() {
        let view = rule.stats.view();
        let entry = routes.entry(rule.route().to_string()).or_default();
        for (total, n) in entry.codes.iter_mut().zip(view.codes) {
            *total += n;
        }
        entry.rules.push(json!({
            "name": &*rule.name,
            "index": rule.index,
            "codes": view.codes,
        }));
        // The histogram is the Route's, shared by its rules: any rule's reading will do;
        // the fullest one is the latest.
        let h = view.route_duration;
        if entry.cumulative.is_empty() || h.count > entry.count {
            entry.cumulative = h.cumulative;
            entry.sum = h.sum;
            entry.count = h.count;
        }
    }
    let routes: Vec<Value> = routes
        .into_iter()
        .map(|(route, mut s)| {
            s.rules.sort_by_key(|r| r["index"].as_u64());
            if s.cumulative.len() != DURATION_BUCKETS.len() {
                s.cumulative.resize(DURATION_BUCKETS.len(), s.count);
            }
            json!({
                "route": route,
                "codes": s.codes,
                "requests": s.codes.iter().sum::<u64>(),
                "rules": s.rules,
                "duration": {"cumulative": s.cumulative, "sum": s.sum, "count": s.count},
            })
        })
        .collect();
    let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    json!({
        "version": snapshot.version,
        "timeMs": time_ms,
        "classes": ["1xx", "2xx", "3xx", "4xx", "5xx"],
        "bounds": DURATION_BUCKETS,
        "routes": routes,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use weir_dataplane::observe::stats::RuleStats;
    use weir_dataplane::{
        ObjectKey, PathMatch, RequestMatch, RetryPolicy, RouteModel, RouteTable, Rule, RuleAction,
        Timeouts, WeightedBackends,
    };

    use super::*;

    fn rule(route: &ObjectKey, name: &str, index: usize) -> Arc<Rule> {
        Arc::new(Rule {
            stats: RuleStats::detached(route, name),
            name: name.into(),
            index,
            matches: vec![RequestMatch::path(PathMatch::Prefix(format!("/{name}").into()))],
            action: RuleAction {
                backends: WeightedBackends::new(vec![]),
                rewrite: None,
                timeouts: Timeouts::default().shared(),
                retries: RetryPolicy::default().shared(),
                filters: Arc::new([]),
                https_redirect: false,
                aggregate: None,
            },
        })
    }

    /// Every Route once, sorted, with its rules in spec order, the histogram as long as
    /// the bounds, and nothing counted yet.
    #[test]
    fn stats_list_every_route_and_rule() {
        let models: Vec<RouteModel> = [("b", &["x", "y"][..]), ("a", &["z"][..])]
            .iter()
            .map(|(name, rules)| {
                let key = ObjectKey::new("ns", name);
                RouteModel {
                    rules: rules.iter().enumerate().map(|(i, r)| rule(&key, r, i)).collect(),
                    key,
                    generation: 1,
                    created: 0,
                    hosts: vec![],
                }
            })
            .collect();
        let mut snapshot = Snapshot::empty();
        snapshot.version = 7;
        snapshot.routes = Arc::new(RouteTable::new(models));
        let v = stats(&snapshot);
        assert_eq!(v["version"], 7);
        assert_eq!(v["bounds"].as_array().unwrap().len(), DURATION_BUCKETS.len());
        assert!(v["timeMs"].as_u64().unwrap() > 1_600_000_000_000);
        let routes = v["routes"].as_array().unwrap();
        let keys: Vec<&str> = routes.iter().map(|r| r["route"].as_str().unwrap()).collect();
        assert_eq!(keys, ["ns/a", "ns/b"]);
        let b = &routes[1];
        assert_eq!(b["rules"][0]["name"], "x");
        assert_eq!(b["rules"][1]["name"], "y");
        assert_eq!(b["codes"], json!([0, 0, 0, 0, 0]));
        assert_eq!(b["requests"], 0);
        assert_eq!(b["duration"]["count"], 0);
        let cumulative = b["duration"]["cumulative"].as_array().unwrap();
        assert_eq!(cumulative.len(), DURATION_BUCKETS.len());
        assert_eq!(stats(&Snapshot::empty())["routes"], json!([]));
    }

    #[test]
    fn assets_carry_type_cache_and_csp() {
        for (path, ty) in [
            ("/", "text/html; charset=utf-8"),
            ("/dashboard.js", "text/javascript; charset=utf-8"),
            ("/dashboard.css", "text/css; charset=utf-8"),
        ] {
            let res = asset(path).unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(res.headers()[header::CONTENT_TYPE], ty, "{path}");
            assert_eq!(res.headers()[header::CACHE_CONTROL], "no-cache");
            let csp = res.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.starts_with("default-src 'self';"), "{csp}");
            assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        }
        assert!(asset("/favicon.ico").is_none());
        assert!(asset("/dashboard.js/x").is_none());
    }

    /// The page holds no inline script or style (the CSP would block them) and loads its
    /// script and style sheet from the admin port.
    #[test]
    fn page_has_no_inline_code() {
        assert!(INDEX_HTML.contains(r#"<script src="/dashboard.js" defer></script>"#));
        assert!(INDEX_HTML.contains(r#"<link rel="stylesheet" href="/dashboard.css">"#));
        assert_eq!(INDEX_HTML.matches("<script").count(), 1);
        assert!(!INDEX_HTML.contains("<style"));
        assert!(!INDEX_HTML.contains("style="));
        let handlers = INDEX_HTML.match_indices(" on").filter(|(i, _)| {
            let rest = &INDEX_HTML[i + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            rest[name_len..].starts_with('=')
        });
        assert_eq!(handlers.count(), 0, "no inline event handlers");
        assert!(!DASHBOARD_JS.contains("innerHTML"), "text goes in as text, never as markup");
        assert!(!DASHBOARD_JS.contains("eval("));
        // Only the admin port's own paths: no absolute URL but the SVG namespace.
        let js = DASHBOARD_JS.replace("'http://www.w3.org/2000/svg'", "");
        assert!(!js.contains("http://") && !js.contains("https://") && !js.contains("//127"));
    }
}
