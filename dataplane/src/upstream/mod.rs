//! The upstream layer: how weir reaches the endpoints of a Service.
//!
//! - [`policy`] — the compiled `BackendPolicy` a [`crate::snapshot::Backend`] carries (the
//!   contract with the controller's compiler).
//! - [`pool`] — connections (HTTP/1.1 keep-alive pool, shared HTTP/2 connections, upgrades)
//!   and the connectors under them (TCP, TLS).
//! - [`tls`] — the rustls client configuration of a policy's `tls`.
//! - [`registry`] — the runtime state that outlives snapshots — one [`registry::ServiceRuntime`]
//!   per backend (balancer cursor, circuit, retry budget, counters) holding one
//!   [`registry::EndpointState`] per endpoint address (in-flight count, health, ejection) —
//!   keyed by [`crate::snapshot::BackendKey`] and endpoint address, so a reload or an
//!   EndpointSlice change keeps the state of what stays and drops what went.
//! - [`balance`] — RoundRobin, LeastRequest (power of two choices), Random, ConsistentHash
//!   (Maglev), slow start.
//! - [`health`] — active checks (HTTP, TCP) and passive outlier ejection, the panic rule.
//! - [`breaker`] — the circuit breaker (closed → open → half-open) and the concurrency caps.

pub mod balance;
pub mod breaker;
pub mod health;
pub mod policy;
pub mod pool;
pub mod registry;
pub mod tls;

pub use policy::BackendPolicy;
pub use registry::UpstreamRegistry;
