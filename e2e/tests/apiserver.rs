//! Tests of the in-memory API server double, driven only through `kube::Client`/`kube::Api`:
//! the verbs, metadata rules, status subresource, server-side apply, watches and their
//! disruptions, selectors, discovery and availability.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "apiserver/common.rs"]
mod common;
#[path = "apiserver/crud.rs"]
mod crud;
#[path = "apiserver/fixtures.rs"]
mod fixtures;
#[path = "apiserver/watching.rs"]
mod watching;
