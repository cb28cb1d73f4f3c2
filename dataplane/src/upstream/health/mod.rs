//! Endpoint health: active checks ([`active`]) and passive outlier ejection ([`passive`]).

pub mod active;
pub mod passive;
