//! Plugins and Consumers → data-plane filters: the `Arc<[Filter]>` chain of every rule.
//!
//! - A rule that references a Plugin that does not resolve (missing, or invalid without a
//!   last good version) gets `Filter::Unavailable` and answers 503: the missing Plugin may
//!   have been authentication, and a protected route must never serve unauthenticated.
//! - `jwt` and `keyAuth` become one `Filter::Authenticate`, built once per (Plugin, Route
//!   namespace) and shared by every rule using it (the verified-token cache with it).
//! - Consumers become one `ConsumerStore` per namespace; a consumer authenticates only on
//!   Routes of its own namespace, whatever the namespace of the (global) Plugin.
//! - `rateLimit` becomes one `Filter::RateLimit` per Plugin object, shared by every rule
//!   and Consumer that uses it: they share its counters. [`FilterBuilder::rate_limits`]
//!   lists them for the publisher, which binds them to their runtime limiters.
//! - `extAuth` joins the same `Filter::Authenticate` (after jwt/keyAuth), built once per
//!   Plugin; a `service` target is a Service port of the backend table.
//! - Every other kind is converted by [`super::convert`], once per Plugin object, and
//!   shared by every rule using it (`cache` is built here, keyed by the Plugin's
//!   namespace/name). The match over [`PluginKind`] has no catch-all arm: a kind that
//!   cannot be built makes the rule answer 503, like a missing Plugin.
//! - A Consumer's own plugins (kinds that run after authentication) are merged into the
//!   chain after authentication, replacing the rule's filter of the same phase; one that
//!   does not resolve makes that consumer's requests answer 503.
//! - Remote JWKS come from the [`JwksRegistry`] kept in the compiler's memory, so a reload
//!   keeps the fetched keys and the refresh task.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use weir_crds::{ExtAuthConfig, JwtConfig, KeyAuthConfig, PluginKind};
use weir_dataplane::filter::extauth::{ExtAuth, ExtAuthSettings, ExtAuthTarget};
use weir_dataplane::filter::jwt::{
    JwksRegistry, JwksSettings, JwtAuth, JwtSettings, KeySet, KeySource, parse_algorithm,
};
use weir_dataplane::filter::keyauth::{DEFAULT_KEY_HEADER, KeyAuth};
use weir_dataplane::filter::{Authenticate, ConsumerEntry, ConsumerStore};
use weir_dataplane::ratelimit::RateLimit;
use weir_dataplane::{BackendKey, Filter, ObjectKey};

use super::backends::BackendInterner;
use super::conditions::{RefProblem, RefReason};
use super::consumers::{ConsumerCheck, secret_value};
use super::plugins::{AppliedPlugin, PluginCatalog};
use crate::index::{Index, ObjectRef};

/// Default `extAuth.timeout`.
pub const DEFAULT_EXT_AUTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Default `clockSkew` of the jwt plugin.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(30);

type Built<T> = Result<Arc<T>, RefProblem>;

/// What a [`FilterBuilder`] built: reusable by a later run over the same Plugins, Consumers
/// and Secrets (an incremental compile of changed Routes), so every rule keeps sharing one
/// filter (and its caches and counters) per Plugin.
#[derive(Clone, Default)]
pub(crate) struct FilterCache {
    stores: BTreeMap<String, Arc<ConsumerStore>>,
    jwt: BTreeMap<(ObjectRef, String), Built<JwtAuth>>,
    key_auth: BTreeMap<(ObjectRef, String), Arc<KeyAuth>>,
    ext_auth: BTreeMap<ObjectRef, Built<ExtAuth>>,
    pub(crate) rate_limits: BTreeMap<ObjectRef, Arc<RateLimit>>,
    /// Filters of the kinds [`super::convert`] builds, one per Plugin object.
    converted: BTreeMap<ObjectRef, Option<Filter>>,
    /// Header transforms using `${route}`, bound to each Route using them.
    routed: BTreeMap<(ObjectRef, ObjectRef), Filter>,
    /// The empty chain, shared by every rule without filters (most of them).
    empty: Arc<[Filter]>,
}

impl std::fmt::Debug for FilterCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterCache")
            .field("stores", &self.stores.len())
            .field("jwt", &self.jwt.len())
            .field("key_auth", &self.key_auth.len())
            .field("ext_auth", &self.ext_auth.len())
            .field("converted", &self.converted.len())
            .field("rate_limits", &self.rate_limits.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Builds filters for one compile run.
pub(crate) struct FilterBuilder<'a> {
    index: &'a Index,
    catalog: &'a PluginCatalog,
    jwks: &'a JwksRegistry,
    cache: FilterCache,
    /// Rate-limit Plugins used since the last [`FilterBuilder::take_touched`].
    touched: Vec<ObjectRef>,
}

impl<'a> FilterBuilder<'a> {
    /// A builder over the index and the usable plugins.
    pub(crate) fn new(
        index: &'a Index,
        catalog: &'a PluginCatalog,
        jwks: &'a JwksRegistry,
    ) -> Self {
        Self::with_cache(index, catalog, jwks, FilterCache::default())
    }

    /// A builder that reuses what an earlier run over the same Plugins, Consumers and
    /// Secrets built.
    pub(crate) fn with_cache(
        index: &'a Index,
        catalog: &'a PluginCatalog,
        jwks: &'a JwksRegistry,
        cache: FilterCache,
    ) -> Self {
        FilterBuilder { index, catalog, jwks, cache, touched: Vec::new() }
    }

    /// What this run built, for a later run.
    pub(crate) fn into_cache(self) -> FilterCache {
        self.cache
    }

    /// The rate-limit Plugins used since the last call (sorted, without duplicates): what
    /// one Route (or the Consumers) keeps in the snapshot's rate limits.
    pub(crate) fn take_touched(&mut self) -> Box<[ObjectRef]> {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort();
        touched.dedup();
        touched.into_boxed_slice()
    }

    /// Adds an accepted Consumer and its usable credentials to its namespace's store.
    pub(crate) fn add_consumer(
        &mut self,
        key: &ObjectRef,
        spec: &weir_crds::ConsumerSpec,
        check: &ConsumerCheck,
    ) {
        let username = spec.username.clone().unwrap_or_else(|| key.name.to_string());
        let entry = ConsumerEntry::new(
            ObjectKey::new(&key.namespace, &key.name),
            &username,
            spec.tier.as_deref(),
            self.consumer_plugins(&key.namespace, &spec.plugins),
        );
        let store = self.cache.stores.entry(key.namespace.to_string()).or_default();
        let Some(store) = Arc::get_mut(store) else { return };
        store.add_consumer(&entry);
        for hash in &check.api_keys {
            if !store.add_api_key(*hash, &entry) {
                tracing::warn!(consumer = %key, "an API key of this consumer is also another consumer's; ignored");
            }
        }
        for (value, jwt_key) in &check.jwt_keys {
            store.add_jwt_key(
                value,
                weir_dataplane::filter::consumers::ConsumerJwtKey {
                    consumer: Arc::clone(&entry),
                    key: jwt_key.clone(),
                },
            );
        }
    }

    /// A consumer's own plugins as filters, in phase order. Only kinds that run after
    /// authentication apply at the consumer level (the Consumer is not accepted otherwise);
    /// a plugin that does not resolve makes this consumer's requests answer 503. Of several
    /// of one kind, the last listed wins (as a rule's plugins override the route's).
    fn consumer_plugins(&mut self, namespace: &str, names: &[String]) -> Arc<[Filter]> {
        let mut filters: Vec<Filter> = Vec::new();
        for name in names {
            let source = ObjectRef::new(namespace, name);
            let built = match self.catalog.plugins.get(&source) {
                Some(Some((kind, _))) if super::plugins::consumer_level(*kind) => match kind {
                    PluginKind::RateLimit => self.rate_limit(&source).map(Filter::RateLimit),
                    _ => self.converted(&source),
                },
                Some(Some(_)) => continue,
                _ => None,
            };
            let filter = built.unwrap_or_else(|| {
                Filter::Unavailable(format!("consumer plugin {source} is not usable").into())
            });
            filters.retain(|f| f.phase() != filter.phase());
            filters.push(filter);
        }
        filters.sort_by_key(Filter::phase);
        Arc::from(filters)
    }

    /// The filter of a Plugin of a kind [`super::convert`] builds (once per run).
    fn converted(&mut self, source: &ObjectRef) -> Option<Filter> {
        if let Some(built) = self.cache.converted.get(source) {
            return built.clone();
        }
        let claims = &self.catalog.claim_headers;
        let built = self
            .catalog
            .spec(source)
            .and_then(|spec| spec.config())
            .and_then(|config| super::convert::standalone_filter(config, claims))
            .and_then(Result::ok);
        self.cache.converted.insert(source.clone(), built.clone());
        built
    }

    /// The cache filter of Plugin `source` (built once per run; its entries are keyed by
    /// the Plugin's namespace/name).
    fn cache_filter(&mut self, source: &ObjectRef) -> Option<Filter> {
        if let Some(built) = self.cache.converted.get(source) {
            return built.clone();
        }
        let config = self.catalog.spec(source).and_then(|spec| spec.cache.as_ref());
        let built = config
            .and_then(|c| super::plugins::cache_plugin(&source.to_string(), c).ok())
            .map(|c| Filter::Cache(Arc::new(c)));
        self.cache.converted.insert(source.clone(), built.clone());
        built
    }

    /// The rate limit of Plugin `source` (built once per run), when it is a usable
    /// `rateLimit` plugin.
    fn rate_limit(&mut self, source: &ObjectRef) -> Option<Arc<RateLimit>> {
        if let Some(rl) = self.cache.rate_limits.get(source) {
            self.touched.push(source.clone());
            return Some(Arc::clone(rl));
        }
        let config = self.catalog.spec(source)?.rate_limit.as_ref()?;
        let key = ObjectKey::new(&source.namespace, &source.name);
        // The catalog holds only validated specs, so this succeeds.
        let spec = super::ratelimit::rate_limit_spec(key, config).ok()?;
        let built = Arc::new(RateLimit::new(spec));
        self.cache.rate_limits.insert(source.clone(), Arc::clone(&built));
        self.touched.push(source.clone());
        Some(built)
    }

    fn store(&mut self, namespace: &str) -> Arc<ConsumerStore> {
        Arc::clone(self.cache.stores.entry(namespace.to_owned()).or_default())
    }

    /// The filter of a converted kind for rules of `route`: header transforms that use
    /// `${route}` get it substituted once here instead of per request.
    fn converted_for(&mut self, source: &ObjectRef, route: &ObjectRef) -> Option<Filter> {
        let filter = self.converted(source)?;
        let transform = match &filter {
            Filter::RequestHeaders(t) | Filter::ResponseHeaders(t) if t.uses_route() => t,
            _ => return Some(filter),
        };
        let id = (source.clone(), route.clone());
        if let Some(bound) = self.cache.routed.get(&id) {
            return Some(bound.clone());
        }
        let bound = Arc::new(transform.for_route(&ObjectKey::new(&route.namespace, &route.name)));
        let bound = match filter {
            Filter::RequestHeaders(_) => Filter::RequestHeaders(bound),
            _ => Filter::ResponseHeaders(bound),
        };
        self.cache.routed.insert(id, bound.clone());
        Some(bound)
    }

    /// The filter chain of one rule of Route `route`, and reference problems found while
    /// building it (e.g. a JWKS Secret or an extAuth Service that does not exist).
    /// `interner` gives an extAuth Service its backend id.
    pub(crate) fn rule_filters(
        &mut self,
        route: &ObjectRef,
        applied: &[AppliedPlugin],
        unresolved: &[String],
        interner: &mut BackendInterner,
    ) -> (Arc<[Filter]>, Vec<RefProblem>) {
        let namespace: &str = &route.namespace;
        if !unresolved.is_empty() {
            let reason = format!("unresolved plugin reference: {}", unresolved.join("; "));
            return (Arc::from(vec![Filter::Unavailable(reason.into())]), Vec::new());
        }
        let mut problems = Vec::new();
        let mut unbuildable = Vec::new();
        let mut filters = Vec::new();
        let (mut jwt, mut key_auth, mut ext_auth) = (None, None, None);
        for p in applied {
            match p.kind {
                PluginKind::Jwt => match self.jwt(namespace, &p.source) {
                    Ok(j) => jwt = Some(j),
                    Err(problem) => problems.push(problem),
                },
                PluginKind::KeyAuth => key_auth = self.key_auth(namespace, &p.source),
                PluginKind::ExtAuth => match self.ext_auth(&p.source, interner) {
                    Ok(e) => ext_auth = Some(e),
                    Err(problem) => problems.push(problem),
                },
                PluginKind::RateLimit => match self.rate_limit(&p.source) {
                    Some(rl) => filters.push(Filter::RateLimit(rl)),
                    None => unbuildable.push(p.source.to_string()),
                },
                PluginKind::CorrelationId
                | PluginKind::IpRestriction
                | PluginKind::Cors
                | PluginKind::Redirect
                | PluginKind::DirectResponse
                | PluginKind::RequestSize
                | PluginKind::RequestHeaders
                | PluginKind::ResponseHeaders
                | PluginKind::Compression => match self.converted_for(&p.source, route) {
                    Some(f) => filters.push(f),
                    None => unbuildable.push(p.source.to_string()),
                },
                PluginKind::Cache => match self.cache_filter(&p.source) {
                    Some(f) => filters.push(f),
                    None => unbuildable.push(p.source.to_string()),
                },
            }
        }
        if !problems.is_empty() {
            let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
            let reason = format!("authentication is misconfigured: {}", messages.join("; "));
            return (Arc::from(vec![Filter::Unavailable(reason.into())]), problems);
        }
        if !unbuildable.is_empty() {
            let reason = format!("plugins cannot be executed: {}", unbuildable.join(", "));
            return (Arc::from(vec![Filter::Unavailable(reason.into())]), problems);
        }
        if jwt.is_some() || key_auth.is_some() || ext_auth.is_some() {
            filters.push(Filter::Authenticate(Arc::new(Authenticate { jwt, key_auth, ext_auth })));
        }
        if filters.is_empty() {
            return (Arc::clone(&self.cache.empty), problems);
        }
        filters.sort_by_key(Filter::phase);
        (Arc::from(filters), problems)
    }

    /// The extAuth filter of Plugin `source` (built once per run).
    fn ext_auth(&mut self, source: &ObjectRef, interner: &mut BackendInterner) -> Built<ExtAuth> {
        if let Some(built) = self.cache.ext_auth.get(source) {
            return built.clone();
        }
        let built = self.build_ext_auth(source, interner);
        self.cache.ext_auth.insert(source.clone(), built.clone());
        built
    }

    fn build_ext_auth(&self, source: &ObjectRef, interner: &mut BackendInterner) -> Built<ExtAuth> {
        let config: &ExtAuthConfig =
            self.catalog.spec(source).and_then(|s| s.ext_auth.as_ref()).ok_or_else(|| {
                RefProblem::new(
                    RefReason::PluginNotFound,
                    format!("plugin {source} is not an extAuth plugin"),
                )
            })?;
        let target = match (&config.url, &config.service) {
            (Some(url), _) => ExtAuthTarget::Url(url.parse().map_err(|_| {
                RefProblem::new(
                    RefReason::PluginNotFound,
                    format!("plugin {source}: spec.extAuth.url is invalid"),
                )
            })?),
            (None, Some(svc)) => {
                let key = BackendKey {
                    namespace: Arc::clone(&source.namespace),
                    service: svc.name.as_str().into(),
                    port: svc.port,
                };
                super::backends::resolve_service_port(self.index, &key).map_err(|e| {
                    RefProblem::new(
                        RefReason::BackendNotFound,
                        format!("plugin {source}: spec.extAuth.service: {e}"),
                    )
                })?;
                let path = config.path.as_deref().unwrap_or("/");
                ExtAuthTarget::Service {
                    backend: interner.intern(key),
                    path_and_query: path.parse().map_err(|_| {
                        RefProblem::new(
                            RefReason::PluginNotFound,
                            format!("plugin {source}: spec.extAuth.path is invalid"),
                        )
                    })?,
                    host: HeaderValue::from_str(&format!(
                        "{}.{}.svc:{}",
                        svc.name, source.namespace, svc.port
                    ))
                    .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
                }
            }
            (None, None) => {
                return Err(RefProblem::new(
                    RefReason::PluginNotFound,
                    format!("plugin {source}: spec.extAuth has no target"),
                ));
            }
        };
        let names = |list: &[String]| -> Box<[HeaderName]> {
            list.iter().filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok()).collect()
        };
        let settings = ExtAuthSettings {
            source: ObjectKey::new(&source.namespace, &source.name),
            target,
            timeout: config
                .timeout
                .as_deref()
                .and_then(|t| weir_crds::parse_duration(t).ok())
                .unwrap_or(DEFAULT_EXT_AUTH_TIMEOUT),
            forward_headers: (!config.forward_headers.is_empty())
                .then(|| names(&config.forward_headers)),
            upstream_headers: names(&config.upstream_headers),
            allow_on_error: config.on_error == weir_crds::ExtAuthOnError::Allow,
        };
        Ok(Arc::new(ExtAuth::new(settings)))
    }

    fn key_auth(&mut self, namespace: &str, source: &ObjectRef) -> Option<Arc<KeyAuth>> {
        let id = (source.clone(), namespace.to_owned());
        if let Some(k) = self.cache.key_auth.get(&id) {
            return Some(Arc::clone(k));
        }
        let config: KeyAuthConfig = self.catalog.spec(source)?.key_auth.clone()?;
        let header = config
            .header
            .as_deref()
            .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .unwrap_or(DEFAULT_KEY_HEADER);
        let built = Arc::new(KeyAuth {
            header,
            query: config.query.as_deref().map(Box::from),
            forward_credential: config.forward_credential,
            consumers: self.store(namespace),
        });
        self.cache.key_auth.insert(id, Arc::clone(&built));
        Some(built)
    }

    fn jwt(&mut self, namespace: &str, source: &ObjectRef) -> Built<JwtAuth> {
        let id = (source.clone(), namespace.to_owned());
        if let Some(built) = self.cache.jwt.get(&id) {
            return built.clone();
        }
        let built = self.build_jwt(namespace, source);
        self.cache.jwt.insert(id, built.clone());
        built
    }

    fn build_jwt(&mut self, namespace: &str, source: &ObjectRef) -> Built<JwtAuth> {
        let not_found = || {
            RefProblem::new(
                RefReason::PluginNotFound,
                format!("plugin {source} is not a jwt plugin"),
            )
        };
        let config: JwtConfig =
            self.catalog.spec(source).and_then(|s| s.jwt.clone()).ok_or_else(not_found)?;
        let keys = if let Some(uri) = &config.jwks_uri {
            let remote = self.jwks.get(uri, JwksSettings::default()).map_err(|e| {
                RefProblem::new(RefReason::InvalidCredential, format!("plugin {source}: {e}"))
            })?;
            KeySource::Remote(remote)
        } else if let Some(secret_ref) = &config.jwks_secret_ref {
            KeySource::Static(Arc::new(self.jwks_secret(source, &secret_ref.name)?))
        } else {
            KeySource::Consumers
        };
        let clock_skew = config
            .clock_skew
            .as_deref()
            .and_then(|s| weir_crds::parse_duration(s).ok())
            .unwrap_or(DEFAULT_CLOCK_SKEW);
        let settings = JwtSettings {
            source: ObjectKey::new(&source.namespace, &source.name),
            algorithms: config.algorithms.iter().filter_map(|a| parse_algorithm(a).ok()).collect(),
            issuer: config.issuer.clone(),
            audiences: config.audiences.clone(),
            keys,
            key_claim: config.key_claim.clone().unwrap_or_else(|| "iss".to_owned()),
            consumer_claim: config.consumer_claim.clone(),
            claims_to_headers: config
                .claims_to_headers
                .iter()
                .filter_map(|c| {
                    Some((c.claim.clone(), HeaderName::from_bytes(c.header.as_bytes()).ok()?))
                })
                .collect(),
            forward_authorization: config.forward_authorization,
            clock_skew,
            consumers: self.store(namespace),
        };
        Ok(Arc::new(JwtAuth::new(settings)))
    }

    /// The JWKS of a `jwksSecretRef` (key `jwks.json`, in the Plugin's namespace).
    fn jwks_secret(&self, source: &ObjectRef, name: &str) -> Result<KeySet, RefProblem> {
        let sref = ObjectRef::new(&source.namespace, name);
        let secret = self.index.secrets.get(&sref).ok_or_else(|| {
            RefProblem::new(
                RefReason::SecretNotFound,
                format!("plugin {source}: spec.jwt.jwksSecretRef: secret {sref} not found"),
            )
        })?;
        let invalid = |what: String| {
            RefProblem::new(
                RefReason::InvalidCredential,
                format!("plugin {source}: spec.jwt.jwksSecretRef: secret {sref} {what}"),
            )
        };
        let json = secret_value(secret, "jwks.json")
            .ok_or_else(|| invalid("has no entry `jwks.json`".to_owned()))?;
        let set =
            KeySet::from_jwks(json).map_err(|e| invalid(format!("entry `jwks.json`: {e}")))?;
        if set.keys.is_empty() {
            return Err(invalid("entry `jwks.json` holds no usable key".to_owned()));
        }
        Ok(set)
    }
}
