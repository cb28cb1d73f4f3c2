//! weir's data plane: the snapshot contract, the router, the proxy, the filter chain and
//! their runtime state.
//!
//! It depends on no Kubernetes crate: it is buildable, testable and benchable alone.

pub mod aggregate;
pub mod cache;
pub mod filter;
pub mod listener;
pub mod metrics;
pub mod observe;
pub mod proxy;
pub mod ratelimit;
pub mod rewrite;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod upstream;

pub use router::{RequestView, RouteMatch, RouteTable};
pub use server::{DataPlane, serve};
pub use snapshot::*;
