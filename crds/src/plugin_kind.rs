//! Plugin kinds as a closed enum: [`PluginKind`] names every typed configuration of a
//! [`PluginSpec`] and [`PluginConfig`] borrows the one that is set. The compiler matches
//! both exhaustively, so a configuration added to the spec cannot be accepted and then
//! ignored: it does not compile until every match says what the kind does.

use crate::plugin::*;

/// Every Plugin type, in the fixed phase order of the filter chain. Adding a typed
/// configuration to [`PluginSpec`] means adding a variant here: [`PluginSpec::kinds`] and
/// the compiler match it exhaustively, so a type can never be accepted and then ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PluginKind {
    /// `correlationId`.
    CorrelationId,
    /// `ipRestriction`.
    IpRestriction,
    /// `cors`.
    Cors,
    /// `redirect`.
    Redirect,
    /// `directResponse`.
    DirectResponse,
    /// `requestSize`.
    RequestSize,
    /// `jwt`.
    Jwt,
    /// `keyAuth`.
    KeyAuth,
    /// `extAuth`.
    ExtAuth,
    /// `rateLimit`.
    RateLimit,
    /// `requestHeaders`.
    RequestHeaders,
    /// `cache`.
    Cache,
    /// `responseHeaders`.
    ResponseHeaders,
    /// `compression`.
    Compression,
}

impl PluginKind {
    /// Every kind, in phase order.
    pub const ALL: [PluginKind; 14] = [
        PluginKind::CorrelationId,
        PluginKind::IpRestriction,
        PluginKind::Cors,
        PluginKind::Redirect,
        PluginKind::DirectResponse,
        PluginKind::RequestSize,
        PluginKind::Jwt,
        PluginKind::KeyAuth,
        PluginKind::ExtAuth,
        PluginKind::RateLimit,
        PluginKind::RequestHeaders,
        PluginKind::Cache,
        PluginKind::ResponseHeaders,
        PluginKind::Compression,
    ];

    /// The spec field name (`rateLimit`, `jwt`, ...), also the name in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::CorrelationId => "correlationId",
            PluginKind::IpRestriction => "ipRestriction",
            PluginKind::Cors => "cors",
            PluginKind::Redirect => "redirect",
            PluginKind::DirectResponse => "directResponse",
            PluginKind::RequestSize => "requestSize",
            PluginKind::Jwt => "jwt",
            PluginKind::KeyAuth => "keyAuth",
            PluginKind::ExtAuth => "extAuth",
            PluginKind::RateLimit => "rateLimit",
            PluginKind::RequestHeaders => "requestHeaders",
            PluginKind::Cache => "cache",
            PluginKind::ResponseHeaders => "responseHeaders",
            PluginKind::Compression => "compression",
        }
    }

    /// The kind of a spec field name.
    pub fn from_name(name: &str) -> Option<PluginKind> {
        PluginKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One typed configuration of a [`PluginSpec`], borrowed.
#[derive(Debug, Clone, Copy)]
pub enum PluginConfig<'a> {
    /// `correlationId`.
    CorrelationId(&'a CorrelationIdConfig),
    /// `ipRestriction`.
    IpRestriction(&'a IpRestrictionConfig),
    /// `cors`.
    Cors(&'a CorsConfig),
    /// `redirect`.
    Redirect(&'a RedirectConfig),
    /// `directResponse`.
    DirectResponse(&'a DirectResponseConfig),
    /// `requestSize`.
    RequestSize(&'a RequestSizeConfig),
    /// `jwt`.
    Jwt(&'a JwtConfig),
    /// `keyAuth`.
    KeyAuth(&'a KeyAuthConfig),
    /// `extAuth`.
    ExtAuth(&'a ExtAuthConfig),
    /// `rateLimit`.
    RateLimit(&'a RateLimitConfig),
    /// `requestHeaders`.
    RequestHeaders(&'a HeaderTransform),
    /// `cache`.
    Cache(&'a CacheConfig),
    /// `responseHeaders`.
    ResponseHeaders(&'a HeaderTransform),
    /// `compression`.
    Compression(&'a CompressionConfig),
}

impl PluginConfig<'_> {
    /// The kind of this configuration.
    pub fn kind(&self) -> PluginKind {
        match self {
            PluginConfig::CorrelationId(_) => PluginKind::CorrelationId,
            PluginConfig::IpRestriction(_) => PluginKind::IpRestriction,
            PluginConfig::Cors(_) => PluginKind::Cors,
            PluginConfig::Redirect(_) => PluginKind::Redirect,
            PluginConfig::DirectResponse(_) => PluginKind::DirectResponse,
            PluginConfig::RequestSize(_) => PluginKind::RequestSize,
            PluginConfig::Jwt(_) => PluginKind::Jwt,
            PluginConfig::KeyAuth(_) => PluginKind::KeyAuth,
            PluginConfig::ExtAuth(_) => PluginKind::ExtAuth,
            PluginConfig::RateLimit(_) => PluginKind::RateLimit,
            PluginConfig::RequestHeaders(_) => PluginKind::RequestHeaders,
            PluginConfig::Cache(_) => PluginKind::Cache,
            PluginConfig::ResponseHeaders(_) => PluginKind::ResponseHeaders,
            PluginConfig::Compression(_) => PluginKind::Compression,
        }
    }
}

impl PluginSpec {
    /// Every typed configuration that is set (a valid spec has exactly one), in phase order.
    pub fn configs(&self) -> Vec<PluginConfig<'_>> {
        // Destructured so that a new field of the spec cannot be forgotten here.
        let PluginSpec {
            global: _,
            rate_limit,
            jwt,
            key_auth,
            cors,
            request_headers,
            response_headers,
            correlation_id,
            cache,
            ip_restriction,
            request_size,
            redirect,
            direct_response,
            compression,
            ext_auth,
            circuit_breaker: _,
        } = self;
        let all = [
            correlation_id.as_ref().map(PluginConfig::CorrelationId),
            ip_restriction.as_ref().map(PluginConfig::IpRestriction),
            cors.as_ref().map(PluginConfig::Cors),
            redirect.as_ref().map(PluginConfig::Redirect),
            direct_response.as_ref().map(PluginConfig::DirectResponse),
            request_size.as_ref().map(PluginConfig::RequestSize),
            jwt.as_ref().map(PluginConfig::Jwt),
            key_auth.as_ref().map(PluginConfig::KeyAuth),
            ext_auth.as_ref().map(PluginConfig::ExtAuth),
            rate_limit.as_ref().map(PluginConfig::RateLimit),
            request_headers.as_ref().map(PluginConfig::RequestHeaders),
            cache.as_ref().map(PluginConfig::Cache),
            response_headers.as_ref().map(PluginConfig::ResponseHeaders),
            compression.as_ref().map(PluginConfig::Compression),
        ];
        all.into_iter().flatten().collect()
    }

    /// Whether the spec still carries the former `circuitBreaker` Plugin type.
    pub fn has_circuit_breaker(&self) -> bool {
        self.circuit_breaker.is_some()
    }

    /// The one typed configuration, when exactly one is set.
    pub fn config(&self) -> Option<PluginConfig<'_>> {
        match self.configs().as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }
}
