//! `correlationId`: one id per request under a configured header, kept from the client when
//! valid, else minted (UUID v4); sent upstream and, with `echo`, back on the response —
//! gateway answers included.
//!
//! A valid id is 1 to 128 characters out of letters, digits and `-_.:` (the rule of
//! `X-Request-ID`): anything else a client sends is replaced, so the id is always safe to
//! log and to echo. With the default header, `X-Request-ID`, the correlation id is the
//! request id the gateway already keeps (the `requestId` of its error bodies).

use http::{HeaderMap, HeaderName};

use super::RequestContext;
use crate::proxy::error::{X_REQUEST_ID, valid_request_id};
use crate::proxy::trace::new_request_id;

/// A compiled `correlationId` plugin.
#[derive(Debug, Clone)]
pub struct CorrelationId {
    /// The header carrying the id (default `X-Request-ID`).
    pub header: HeaderName,
    /// Echo the id on the response (default true).
    pub echo: bool,
}

impl CorrelationId {
    /// Keeps a valid incoming id (exactly one value) or mints one, and sets it on the
    /// upstream request.
    pub fn request(&self, request: &mut http::request::Parts, ctx: &mut RequestContext<'_>) {
        let id = if self.header == X_REQUEST_ID {
            // The proxy already made X-Request-ID valid and single: that is the id.
            ctx.request_id.clone()
        } else {
            let mut values = request.headers.get_all(&self.header).iter();
            match (values.next(), values.next()) {
                (Some(v), None) if valid_request_id(v) => v.clone(),
                _ => new_request_id(),
            }
        };
        request.headers.insert(self.header.clone(), id.clone());
        if self.echo {
            ctx.correlation = Some((self.header.clone(), id));
        }
    }

    /// Echoes the id on the response (replacing any value the upstream sent).
    pub fn response(&self, headers: &mut HeaderMap, ctx: &RequestContext<'_>) {
        if let Some((name, value)) = &ctx.correlation {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// The default header.
pub const DEFAULT_HEADER: HeaderName = X_REQUEST_ID;
