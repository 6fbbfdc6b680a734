//! The copy of an upstream request kept in case it must be sent again: a retry on another
//! backend, or a replay after a pooled connection turned out closed (the keep-alive race).
//!
//! hyper consumes the request it sends, so the copy is made before every send of an idempotent
//! request with a body held whole, and almost never used. A `HeaderMap` clone costs two
//! allocations and a reference count per field, then as much again to drop; this copy is the
//! head's fields written into one buffer (one allocation, no reference counts), and the
//! request is rebuilt from it only when it is needed.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri, Version};

use crate::body::UpstreamBody;

pub(crate) struct SpareRequest {
    method: Method,
    uri: Uri,
    version: Version,
    /// Each field as its name's length (u32, little-endian), the name, its value's length and
    /// the value, in the map's order (repeated names stay in their order).
    fields: Vec<u8>,
    fields_len: usize,
    /// `None` for [`UpstreamBody::Empty`], else the body held whole.
    body: Option<Option<Bytes>>,
}

impl SpareRequest {
    /// A copy of `request`, or `None` when its body streams (it cannot be sent twice).
    pub(crate) fn of(request: &Request<UpstreamBody>) -> Option<Self> {
        let body = match request.body() {
            UpstreamBody::Empty => None,
            UpstreamBody::Full(data) => Some(data.clone()),
            UpstreamBody::Streaming(_) => return None,
        };
        let headers = request.headers();
        let size = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 8)
            .sum();
        let mut fields = Vec::with_capacity(size);
        for (name, value) in headers {
            for part in [name.as_str().as_bytes(), value.as_bytes()] {
                // A field longer than 4 GiB cannot have been parsed; hyper's limits are far lower.
                let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
                fields.extend_from_slice(&len.to_le_bytes());
                fields.extend_from_slice(part);
            }
        }
        Some(Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            fields,
            fields_len: headers.len(),
            body,
        })
    }

    /// The request again, as it was copied.
    pub(crate) fn to_request(&self) -> Request<UpstreamBody> {
        let mut headers = HeaderMap::with_capacity(self.fields_len);
        let mut rest = self.fields.as_slice();
        while let (Some(name), Some(value)) = (take_part(&mut rest), take_part(&mut rest)) {
            // Both were a valid name and value when copied.
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
            {
                headers.append(name, value);
            }
        }
        let body = self
            .body
            .clone()
            .map_or(UpstreamBody::Empty, UpstreamBody::Full);
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = headers;
        request
    }
}

/// The next length-prefixed part of `rest`, or `None` at its end.
fn take_part<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, tail) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    let part = tail.get(..len)?;
    *rest = tail.get(len..)?;
    Some(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: UpstreamBody) -> Request<UpstreamBody> {
        let mut r = Request::new(body);
        *r.method_mut() = Method::PUT;
        *r.uri_mut() = "/a/b?c=d".parse().expect("uri");
        let h = r.headers_mut();
        h.insert("host", HeaderValue::from_static("example.com"));
        h.append("x-multi", HeaderValue::from_static("one"));
        h.append("x-multi", HeaderValue::from_static("two"));
        h.insert("x-empty", HeaderValue::from_static(""));
        h.insert("content-length", HeaderValue::from_static("5"));
        r
    }

    #[test]
    fn a_spare_rebuilds_the_same_request_as_often_as_needed() {
        let original = request(UpstreamBody::Full(Some(Bytes::from_static(b"hello"))));
        let spare = SpareRequest::of(&original).expect("a body held whole can be copied");
        for _ in 0..2 {
            let again = spare.to_request();
            assert_eq!(again.method(), original.method());
            assert_eq!(again.uri(), original.uri());
            assert_eq!(again.version(), original.version());
            assert_eq!(again.headers(), original.headers());
            let order: Vec<_> = again.headers().get_all("x-multi").iter().collect();
            assert_eq!(order, ["one", "two"]);
            match again.body() {
                UpstreamBody::Full(Some(data)) => assert_eq!(&data[..], b"hello"),
                other => panic!("unexpected body {other:?}"),
            }
        }
    }

    #[test]
    fn an_empty_body_stays_empty() {
        let spare = SpareRequest::of(&request(UpstreamBody::Empty)).expect("empty");
        assert!(matches!(spare.to_request().body(), UpstreamBody::Empty));
    }
}
