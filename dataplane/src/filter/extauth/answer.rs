//! The auth service's answer: read with a size cap, then either its identity headers go
//! onto the upstream request (2xx) or it goes to the client as sent (anything else).

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TE};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;

use crate::proxy::ProxyBody;
use crate::proxy::body::BoxError;
use crate::proxy::headers::remove_hop_by_hop;

/// The largest body of the auth service's answer that is kept; the rest is cut off.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An answer of the auth service, its body read (at most [`MAX_BODY_BYTES`]).
#[derive(Debug)]
pub(super) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An error and its sources as one line, for logs (never carries request headers).
pub(super) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Reads `response`'s body up to [`MAX_BODY_BYTES`]; past that the rest is not read (the
/// connection is then closed rather than reused). A body that fails is no answer.
pub(super) async fn read<B>(response: Response<B>) -> Result<Answer, String>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let (parts, mut body) = response.into_parts();
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            let e: BoxError = e.into();
            format!("reading the answer's body: {}", describe(&*e))
        })?;
        let Ok(data) = frame.into_data() else { continue };
        let room = MAX_BODY_BYTES - buf.len();
        if data.len() > room {
            buf.extend_from_slice(&data[..room]);
            break;
        }
        buf.extend_from_slice(&data);
    }
    Ok(Answer { status: parts.status, headers: parts.headers, body: buf.freeze() })
}

/// Copies each of `names` from a 2xx answer onto the upstream request: all its values,
/// replacing the request's (a name the answer lacks is left absent).
pub(super) fn copy_headers(
    names: &[HeaderName],
    answer: &HeaderMap,
    request: &mut http::request::Parts,
) {
    for name in names {
        request.headers.remove(name);
        for value in answer.get_all(name) {
            request.headers.append(name.clone(), value.clone());
        }
    }
}

fn may_have_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

impl Answer {
    /// The refusal as the client gets it: status, headers without hop-by-hop ones (so
    /// `Location`, `WWW-Authenticate`, `Set-Cookie`, `Content-Type` stay), the read body
    /// and its `Content-Length`.
    pub(super) fn into_response(self) -> Response<ProxyBody> {
        let Answer { status, mut headers, body } = self;
        remove_hop_by_hop(&mut headers);
        headers.remove(TE);
        headers.remove(CONTENT_LENGTH);
        let body = if may_have_body(status) {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
            ProxyBody::full(body)
        } else {
            ProxyBody::empty()
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use futures_util::FutureExt;
    use http_body_util::Full;

    use super::*;

    fn response<B>(status: u16, headers: &[(&str, &str)], body: B) -> Response<B> {
        let mut r = Response::new(body);
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            r.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    #[test]
    fn bodies_are_capped_at_64_kib() {
        let big = Full::new(Bytes::from(vec![b'x'; 200 * 1024]));
        let answer = read(response(403, &[], big)).now_or_never().unwrap().unwrap();
        assert_eq!(answer.body.len(), MAX_BODY_BYTES);
        let exact = Full::new(Bytes::from(vec![b'y'; MAX_BODY_BYTES]));
        let answer = read(response(403, &[], exact)).now_or_never().unwrap().unwrap();
        assert_eq!(answer.body.len(), MAX_BODY_BYTES);
    }

    #[tokio::test]
    async fn bodies_in_frames_are_capped_and_a_failing_body_is_no_answer() {
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(8);
        let feed = tokio::spawn(async move {
            for _ in 0..5 {
                if tx.send_data(Bytes::from(vec![b'z'; 20 * 1024])).await.is_err() {
                    break;
                }
            }
        });
        let answer = read(response(401, &[], body)).await.unwrap();
        assert_eq!(answer.body.len(), MAX_BODY_BYTES);
        feed.await.unwrap();

        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(8);
        tx.send_data(Bytes::from_static(b"part")).await.unwrap();
        tx.abort(Box::new(std::io::Error::other("connection reset")));
        let error = read(response(401, &[], body)).await.unwrap_err();
        assert!(error.contains("connection reset"), "{error}");
    }

    #[test]
    fn refusals_keep_end_to_end_headers_and_fix_the_length() {
        let answer = Answer {
            status: StatusCode::FOUND,
            headers: response(
                302,
                &[
                    ("location", "https://login.test/?rd=/x"),
                    ("set-cookie", "a=1"),
                    ("set-cookie", "b=2"),
                    ("www-authenticate", "Bearer"),
                    ("content-type", "text/html"),
                    ("content-length", "204800"),
                    ("connection", "close, x-hop"),
                    ("x-hop", "1"),
                    ("keep-alive", "timeout=5"),
                    ("transfer-encoding", "chunked"),
                ],
                (),
            )
            .into_parts()
            .0
            .headers,
            body: Bytes::from_static(b"<a href=login>"),
        };
        let r = answer.into_response();
        assert_eq!(r.status(), 302);
        let h = r.headers();
        assert_eq!(h["location"], "https://login.test/?rd=/x");
        assert_eq!(h.get_all("set-cookie").iter().count(), 2);
        assert_eq!(h["www-authenticate"], "Bearer");
        assert_eq!(h["content-type"], "text/html");
        assert_eq!(h["content-length"], "14");
        for gone in ["connection", "x-hop", "keep-alive", "transfer-encoding"] {
            assert!(!h.contains_key(gone), "{gone}: {h:?}");
        }
        let ProxyBody::Full(Some(body)) = r.into_body() else { panic!("no body") };
        assert_eq!(&body[..], b"<a href=login>");

        let empty = Answer {
            status: StatusCode::NOT_MODIFIED,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        };
        let r = empty.into_response();
        assert!(!r.headers().contains_key("content-length"));
    }

    #[test]
    fn identity_headers_are_copied_with_every_value_replacing() {
        let mut request =
            http::Request::get("/").header("x-user-id", "forged").body(()).unwrap().into_parts().0;
        let answer = response(
            200,
            &[("x-user-id", "42"), ("x-groups", "a"), ("x-groups", "b"), ("x-other", "no")],
            (),
        )
        .into_parts()
        .0
        .headers;
        let names = [
            HeaderName::from_static("x-user-id"),
            HeaderName::from_static("x-groups"),
            HeaderName::from_static("x-missing"),
        ];
        copy_headers(&names, &answer, &mut request);
        assert_eq!(request.headers["x-user-id"], "42");
        let groups: Vec<_> = request.headers.get_all("x-groups").iter().collect();
        assert_eq!(groups, ["a", "b"]);
        assert!(!request.headers.contains_key("x-other"));
        assert!(!request.headers.contains_key("x-missing"));
    }
}
