//! The route table: host lookup (exact map, then wildcards, then any-host) and rule
//! matching in Gateway API precedence order.

use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::snapshot::{RequestMatch, RouteModel, Rule};

/// The compiled, precedence-ordered route table. Built off the hot path by [`RouteTable::new`].
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<RouteModel>,
}

/// A request as the router sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method.
    pub method: &'a Method,
    /// Host without port, as sent (matching is case-insensitive).
    pub host: &'a str,
    /// Path, without the query.
    pub path: &'a str,
    /// Raw query string, without `?`.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

/// The result of a successful match.
#[derive(Debug, Clone, Copy)]
pub struct RouteMatch<'t> {
    /// The matched rule.
    pub rule: &'t Arc<Rule>,
    /// The match entry of the rule that matched (for prefix rewrites).
    pub matched: &'t RequestMatch,
}

impl RouteTable {
    /// Builds the table: indexes hosts and paths and sorts rules by precedence.
    pub fn new(routes: Vec<RouteModel>) -> Self {
        RouteTable { routes }
    }

    /// Number of Route objects in the table.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when no Route is configured.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Finds the rule that serves a request. TODO(router): real implementation.
    pub fn find<'t>(&'t self, _req: &RequestView<'_>) -> Option<RouteMatch<'t>> {
        None
    }
}
