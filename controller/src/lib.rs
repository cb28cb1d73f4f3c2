//! weir's controller: sources, the index, `compile()`, the admin server, and the wiring
//! behind the `weir` binary.

#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod compile;
pub mod dashboard;
pub mod index;
pub mod kube;
pub mod load;
pub mod observe;
pub mod publish;
pub mod release;
pub mod serving;
pub mod source;
pub mod standalone;
pub mod upstream_events;
pub mod validate;
