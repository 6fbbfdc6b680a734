//! Writing a request to an origin: the head encoded into the connection's buffer, then the body
//! with the framing the head announced (RFC 9112 §6).

use std::future::poll_fn;
use std::io::{IoSlice, Write as _};
use std::pin::Pin;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::Body;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::conn::Connection;
use crate::error::{BoxError, Progress, SendError};
use crate::response::is_forbidden_trailer;

/// The request body as the exchange sends it.
pub enum Payload<'a, B> {
    Empty,
    /// Held whole; it can be sent again. Sent with the head's `Content-Length`, or one the
    /// client adds when the head has none.
    Full(&'a Bytes),
    /// Streams from the client: as it comes when the head has a `Content-Length`, otherwise
    /// chunked. Once polled it cannot be sent again.
    Stream(&'a mut B),
}

/// A streaming body still to be sent after the head, and how it is framed.
pub(crate) struct Streaming<'p, B> {
    body: &'p mut B,
    chunked: bool,
    /// The head's `Content-Length`, which the body must match.
    declared: Option<u64>,
}

/// Writes the request head, with the body when it is held whole: `extra` fields first, then the
/// head's. A streaming body comes back, to be sent by [`Streaming::write`]. `progress` becomes
/// [`Progress::Sent`] with the first byte written.
pub(crate) async fn write_head<'a, 'p, B>(
    conn: &mut Connection,
    head: &http::request::Parts,
    extra: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    payload: Payload<'p, B>,
    progress: &mut Progress,
) -> Result<Option<Streaming<'p, B>>, SendError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    // A request without a body (most of them) needs no lookup of its length.
    let declared = match payload {
        Payload::Empty => None,
        _ => declared_length(&head.headers),
    };
    let framing = match &payload {
        Payload::Stream(_) if declared.is_none() => Framing::Chunked,
        Payload::Full(body) if declared.is_none() => Framing::Length(body.len()),
        _ => Framing::AsIs,
    };
    let mut out = std::mem::take(&mut conn.write);
    out.clear();
    encode_head(&mut out, head, extra, framing);
    // A body held whole goes out with the head, in one `writev`, without being copied.
    let written = match &payload {
        Payload::Full(body) => {
            let mut parts = [IoSlice::new(&out), IoSlice::new(body)];
            write_all(&mut conn.stream, &mut parts, progress).await
        }
        _ => write_all(&mut conn.stream, &mut [IoSlice::new(&out)], progress).await,
    };
    conn.write = out;
    written?;
    Ok(match payload {
        Payload::Empty | Payload::Full(_) => None,
        Payload::Stream(body) => Some(Streaming {
            body,
            chunked: framing == Framing::Chunked,
            declared,
        }),
    })
}

/// The framing field the client adds to the head's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// The head says it all (or there is no body).
    AsIs,
    Length(usize),
    Chunked,
}

/// The request line, the `extra` fields, the head's in the map's order, and the framing field.
/// Names and values cannot hold CR or LF (`http` rejects them), so nothing a client sent can end
/// the head early.
fn encode_head<'a>(
    out: &mut Vec<u8>,
    head: &http::request::Parts,
    extra: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    framing: Framing,
) {
    let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in extra {
        write_field(out, name, value);
    }
    for (name, value) in &head.headers {
        write_field(out, name, value);
    }
    match framing {
        Framing::AsIs => {}
        Framing::Length(len) => {
            let _ = write!(out, "content-length: {len}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

impl<B> Streaming<'_, B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Sends the body, frame by frame as the client's body yields them.
    pub(crate) async fn write<W: AsyncWrite + Unpin>(
        self,
        stream: &mut W,
        progress: &mut Progress,
    ) -> Result<(), SendError> {
        let Streaming {
            body,
            chunked,
            declared,
        } = self;
        write_stream(stream, body, chunked, declared, progress).await
    }
}

async fn write_stream<B, W>(
    stream: &mut W,
    body: &mut B,
    chunked: bool,
    declared: Option<u64>,
    progress: &mut Progress,
) -> Result<(), SendError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    W: AsyncWrite + Unpin,
{
    let mut sent = 0u64;
    let mut trailers = None;
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| SendError::body(e.into(), *progress))?;
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                trailers = frame.into_trailers().ok();
                continue;
            }
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if declared.is_some_and(|len| sent > len) {
            return Err(SendError::malformed(
                "request body longer than its Content-Length",
                *progress,
            ));
        }
        if chunked {
            let mut size = [0u8; 18];
            let size_len = chunk_size_line(&mut size, data.len());
            let mut parts = [
                IoSlice::new(&size[..size_len]),
                IoSlice::new(&data),
                IoSlice::new(b"\r\n"),
            ];
            write_all(stream, &mut parts, progress).await?;
        } else {
            write_all(stream, &mut [IoSlice::new(&data)], progress).await?;
        }
    }
    if declared.is_some_and(|len| sent != len) {
        return Err(SendError::malformed(
            "request body shorter than its Content-Length",
            *progress,
        ));
    }
    if chunked {
        let mut end = b"0\r\n".to_vec();
        // Fields that frame, route or manage a connection are no trailers (RFC 9110 §6.5.1).
        let trailers = trailers.iter().flatten();
        for (name, value) in trailers.filter(|(name, _)| !is_forbidden_trailer(name)) {
            write_field(&mut end, name, value);
        }
        end.extend_from_slice(b"\r\n");
        write_all(stream, &mut [IoSlice::new(&end)], progress).await?;
    }
    Ok(())
}

fn write_field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `{size:x}\r\n` into `buf`; returns its length.
fn chunk_size_line(buf: &mut [u8; 18], size: usize) -> usize {
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // 16 hex digits and CRLF always fit in 18 bytes.
    let _ = write!(cursor, "{size:x}\r\n");
    cursor.position() as usize
}

/// Writes every slice, with as few system calls as the socket allows.
async fn write_all<W: AsyncWrite + Unpin>(
    stream: &mut W,
    mut parts: &mut [IoSlice<'_>],
    progress: &mut Progress,
) -> Result<(), SendError> {
    while !parts.is_empty() {
        match stream.write_vectored(parts).await {
            Ok(0) => return Err(SendError::closed(*progress)),
            Ok(n) => {
                *progress = Progress::Sent;
                IoSlice::advance_slices(&mut parts, n);
            }
            Err(e) => return Err(SendError::io(e, *progress)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_origin_form_with_every_field() {
        let request = http::Request::post("/a/b?c=1")
            .header("host", "example.com")
            .header("x-many", "1")
            .header("x-many", "2")
            .body(())
            .expect("request");
        let (parts, ()) = request.into_parts();
        let mut out = Vec::new();
        encode_head(&mut out, &parts, [], Framing::Chunked);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "POST /a/b?c=1 HTTP/1.1\r\nhost: example.com\r\nx-many: 1\r\nx-many: 2\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
        // Added fields come first; a body held whole gets its length when the head has none.
        let via = HeaderValue::from_static("1.1 gatehouse");
        out.clear();
        encode_head(
            &mut out,
            &parts,
            [(&header::VIA, &via)],
            Framing::Length(12),
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "POST /a/b?c=1 HTTP/1.1\r\nvia: 1.1 gatehouse\r\nhost: example.com\r\nx-many: 1\r\n\
             x-many: 2\r\ncontent-length: 12\r\n\r\n"
        );
    }

    #[test]
    fn chunk_sizes_are_hex() {
        let mut buf = [0u8; 18];
        let n = chunk_size_line(&mut buf, 0x1f40);
        assert_eq!(&buf[..n], b"1f40\r\n");
        let n = chunk_size_line(&mut buf, usize::MAX);
        assert_eq!(&buf[..n], b"ffffffffffffffff\r\n");
    }
}
