//! The body of a response being stored: streamed to the client unchanged while its
//! chunks are kept (reference-counted `Bytes`, no copy until the end). At the end of the
//! stream the entry is stored and the waiters released; past `maxBodySize`, on trailers,
//! on an error, or when the client goes away first, nothing is stored and the waiters are
//! released (dropping the [`Lead`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::freshness::Freshness;
use super::{CacheKey, CachePlugin, CacheRuntime, Entry, Lead};
use crate::proxy::ProxyBody;
use crate::proxy::body::BoxError;

/// What storing one answer needs, until its body ends.
#[derive(Debug)]
pub struct Store {
    runtime: Arc<CacheRuntime>,
    plugin: Arc<CachePlugin>,
    key: CacheKey,
    lead: Option<Lead>,
    status: StatusCode,
    headers: HeaderMap,
    freshness: Freshness,
    chunks: Vec<Bytes>,
    size: u64,
}

impl Store {
    pub(crate) fn new(
        runtime: Arc<CacheRuntime>,
        plugin: Arc<CachePlugin>,
        key: CacheKey,
        lead: Option<Lead>,
        status: StatusCode,
        headers: HeaderMap,
        freshness: Freshness,
    ) -> Self {
        Store {
            runtime,
            plugin,
            key,
            lead,
            status,
            headers,
            freshness,
            chunks: Vec::new(),
            size: 0,
        }
    }

    /// Keeps `chunk`; false past the size cap (the store is then abandoned).
    fn keep(&mut self, chunk: &Bytes) -> bool {
        self.size += chunk.len() as u64;
        if self.size > self.plugin.max_body_size {
            return false;
        }
        self.chunks.push(chunk.clone());
        true
    }

    /// The body ended: stores the entry and releases the waiters.
    fn finish(mut self) {
        // Always one exact-size copy: a chunk is a slice of the connection's read buffer,
        // and keeping it would keep that whole buffer alive beyond what the store's byte
        // budget counts (many small entries could pin many read buffers).
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            _ => {
                let mut all = BytesMut::with_capacity(self.size as usize);
                self.chunks.iter().for_each(|c| all.extend_from_slice(c));
                all.freeze()
            }
        };
        let headers = owned(&self.headers);
        let entry = Entry::new(self.status, headers, body, SystemTime::now(), self.freshness);
        self.runtime.insert(&self.plugin, self.key, entry, self.lead.take());
    }

    /// Reads a whole body (a background refresh) and stores it; gives up past the cap.
    pub(crate) async fn collect<B>(mut self, mut body: B)
    where
        B: Body<Data = Bytes> + Unpin,
    {
        use http_body_util::BodyExt as _;
        while let Some(frame) = body.frame().await {
            match frame.map(Frame::into_data) {
                Ok(Ok(chunk)) => {
                    if !self.keep(&chunk) {
                        return;
                    }
                }
                // Trailers or an error: not stored.
                Ok(Err(_)) | Err(_) => return,
            }
        }
        self.finish();
    }
}

/// `headers` with every value copied into its own allocation: hyper's header values are
/// slices of the connection's read buffer, which a stored entry must not keep alive.
fn owned(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let mut copy =
            http::HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        out.append(name.clone(), copy);
    }
    out
}

/// A response body copied into the cache as it streams.
#[derive(Debug)]
pub struct TeeBody {
    inner: ProxyBody,
    store: Option<Store>,
}

impl TeeBody {
    /// `inner`, copied into `store`.
    pub fn new(inner: ProxyBody, store: Store) -> Self {
        if inner.is_end_stream() {
            // No frame will be polled: the (empty) body is complete now.
            store.finish();
            return TeeBody { inner, store: None };
        }
        TeeBody { inner, store: Some(store) }
    }

    /// The wrapped body's state.
    pub fn inner(&self) -> &ProxyBody {
        &self.inner
    }
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                Some(chunk) => {
                    if let Some(store) = &mut this.store
                        && !store.keep(chunk)
                    {
                        this.store = None;
                    }
                    // hyper does not poll again once a sized body says it ended.
                    if this.inner.is_end_stream()
                        && let Some(store) = this.store.take()
                    {
                        store.finish();
                    }
                }
                None => this.store = None,
            },
            Poll::Ready(Some(Err(_))) => this.store = None,
            Poll::Ready(None) => {
                if let Some(store) = this.store.take() {
                    store.finish();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
