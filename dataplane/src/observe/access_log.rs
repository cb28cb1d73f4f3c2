//! The access log (CONTRACT STUB — issue 14, access log): one line per request (JSON, or
//! a human line), formatted and written by a background thread fed through a bounded
//! queue; when the writer falls behind, lines are dropped and counted
//! (`weir_access_log_dropped_total`), requests never wait. A file target is reopened on
//! [`AccessLog::reopen`] (SIGHUP, for logrotate).

use std::path::PathBuf;
use std::sync::Arc;

use super::{RequestObserver, RequestRecord};

/// Where lines go (`--access-log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// A file, appended to (created when missing).
    Path(PathBuf),
}

/// Line format (`--access-log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// A human-readable line.
    Text,
}

/// How to start the access log.
#[derive(Debug, Clone)]
pub struct AccessLogOptions {
    /// Where.
    pub target: AccessLogTarget,
    /// How.
    pub format: AccessLogFormat,
    /// Lines that may wait for the writer; past it they are dropped.
    pub queue: usize,
}

/// The running access log.
#[derive(Debug)]
pub struct AccessLog {}

impl AccessLog {
    /// Opens the target and starts the writer.
    pub fn start(_options: AccessLogOptions) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(AccessLog {}))
    }

    /// Reopens a file target (SIGHUP); no-op for stdout.
    pub fn reopen(&self) {}

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        0
    }

    /// Registers `weir_access_log_dropped_total` (and any other access-log metric).
    pub fn register(&self, _registry: &mut prometheus_client::registry::Registry) {}
}

impl RequestObserver for AccessLog {
    fn on_request_end(&self, _record: &RequestRecord) {}
}
