//! The listeners' metrics: open connections per listener, refused connections and failed
//! TLS handshakes. Counted per connection, never per request.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Metrics of the plain and TLS listeners, shared by every snapshot.
#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    connections: Family<Labels, Gauge>,
    refused: Family<Labels, Counter>,
    /// `weir_connections{listener="http"}`: open plain connections (upgraded ones included).
    pub http_connections: Gauge,
    /// `weir_connections{listener="https"}`: open TLS connections (upgraded ones included).
    pub https_connections: Gauge,
    /// `weir_connections_refused_total{listener="http"}`: closed at once, over `--max-connections`.
    pub http_refused: Counter,
    /// `weir_connections_refused_total{listener="https"}`.
    pub https_refused: Counter,
    /// `weir_tls_handshake_errors_total`: handshakes that failed or timed out (no
    /// certificate for the SNI, protocol or version mismatch, a client gone silent).
    pub tls_handshake_errors: Counter,
}

fn label(listener: &str) -> Labels {
    vec![("listener".to_owned(), listener.to_owned())]
}

impl Default for ListenerMetrics {
    fn default() -> Self {
        let connections = Family::<Labels, Gauge>::default();
        let refused = Family::<Labels, Counter>::default();
        let http_connections = connections.get_or_create(&label("http")).clone();
        let https_connections = connections.get_or_create(&label("https")).clone();
        let http_refused = refused.get_or_create(&label("http")).clone();
        let https_refused = refused.get_or_create(&label("https")).clone();
        ListenerMetrics {
            connections,
            refused,
            http_connections,
            https_connections,
            http_refused,
            https_refused,
            tls_handshake_errors: Counter::default(),
        }
    }
}

impl ListenerMetrics {
    /// Registers the metrics in `registry` (the admin port's `/metrics`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "weir_connections",
            "Open client connections, by listener (upgraded connections included)",
            self.connections.clone(),
        );
        registry.register(
            "weir_connections_refused",
            "Client connections closed at once because --max-connections were open",
            self.refused.clone(),
        );
        registry.register(
            "weir_tls_handshake_errors",
            "TLS handshakes with clients that failed or timed out",
            self.tls_handshake_errors.clone(),
        );
    }
}
