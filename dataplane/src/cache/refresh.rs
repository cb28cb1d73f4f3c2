//! Stale-while-revalidate: the request that found a stale entry (and leads its key) is
//! answered with it at once, and its prepared upstream request is sent by a spawned task
//! through the same backend, timeouts and retries; the answer is stored when it can be,
//! and the next request is a `Hit`.

use std::sync::Arc;

use http::Response;

use super::{CacheState, Entry};
use crate::proxy::ProxyBody;
use crate::proxy::forward::{self, Attempts, Prepared};
use crate::server::DataPlane;
use crate::snapshot::{Backend, RetryPolicy, Snapshot, Timeouts};

/// Answers with `stale` and refreshes it in the background from `backend` of `snapshot`
/// (the request's own: when a reload replaced it meanwhile, the refresh is left to a
/// later request).
#[allow(clippy::too_many_arguments)]
pub(crate) fn answer_stale(
    dataplane: &Arc<DataPlane>,
    snapshot: &Snapshot,
    backend: &Backend,
    timeouts: &Timeouts,
    retries: &RetryPolicy,
    prepared: Prepared,
    stale: &Entry,
    state: &mut CacheState,
) -> Response<ProxyBody> {
    let response = stale.respond(&prepared.method, &prepared.headers, std::time::SystemTime::now());
    let current = dataplane.current();
    let index = current.backends.backends.iter().position(|b| std::ptr::eq(b, backend));
    let (Some(index), true) = (index, std::ptr::eq(&*current, snapshot)) else {
        // Dropping the lead lets the next request refresh.
        state.lead = None;
        state.key = None;
        return response;
    };
    let dataplane = Arc::clone(dataplane);
    let (timeouts, retries) = (*timeouts, *retries);
    let store = refresh_store(state);
    tokio::spawn(async move {
        let Some(backend) = current.backends.backends.get(index) else { return };
        let mut attempts = Attempts::default();
        let result = forward::send(
            &dataplane.upstream,
            backend,
            &timeouts,
            &retries,
            prepared,
            &mut attempts,
        )
        .await;
        let Ok(response) = result else {
            tracing::debug!("cache: background refresh failed; the stale entry stays");
            return;
        };
        let (mut parts, body) = response.into_parts();
        crate::proxy::headers::remove_hop_by_hop(&mut parts.headers);
        let Some(mut store) = store else { return };
        if let Some(writer) = store.begin_store(&parts) {
            writer.collect(body).await;
        }
    });
    response
}

/// The state the refresh stores with (the request's key and lead move into the task).
fn refresh_store(state: &mut CacheState) -> Option<CacheState> {
    Some(CacheState {
        status: state.status,
        plugin: Arc::clone(&state.plugin),
        runtime: Arc::clone(&state.runtime),
        key: state.key.take(),
        lead: state.lead.take(),
        stale: None,
        credentials: state.credentials,
    })
}
