//! One exchange on a pooled connection: the request out, the response head in, and the body
//! handed over to the response.
//!
//! It runs in the caller's task. hyper's client ran every connection as a task of its own, fed
//! through a channel, and woke the request's task through another: two task switches, two
//! allocations and ~2,000 instructions per request that this does without.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::Body;

use crate::body::OriginBody;
use crate::conn::{make_room, Connection, READ_SIZE};
use crate::error::{BoxError, Progress, SendError};
use crate::pool::PooledConn;
use crate::request::{write_head, Payload, Streaming};
use crate::response::{has_final_head, parse_head, take, Framing, Head, MAX_HEAD_SIZE};
use tokio::io::AsyncReadExt;

pub(crate) async fn send<'a, B>(
    mut pooled: PooledConn,
    head: &http::request::Parts,
    extra: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    payload: Payload<'_, B>,
    body_timeout: Option<Duration>,
) -> Result<Response<OriginBody>, SendError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let head_request = head.method == Method::HEAD;
    let Some(conn) = pooled.connection() else {
        return Err(SendError::closed(Progress::Unsent));
    };
    let mut progress = Progress::Unsent;
    let written = match write_head(conn, head, extra, payload, &mut progress).await {
        Ok(Some(body)) => send_body(conn, body, &mut progress).await,
        Ok(None) => Ok(true),
        Err(e) => Err(e),
    };
    // Whether the whole request went out: if not, the connection cannot carry another.
    let complete = match written {
        Ok(complete) => complete,
        Err(e) if e.is_unanswered_close() => {
            // The origin may have answered before it stopped reading and closed (a 413, say):
            // if its answer came, that is what the client gets.
            if conn.read.is_empty() && !matches!(conn.read_more(READ_SIZE).await, Ok(1..)) {
                return Err(e);
            }
            false
        }
        Err(e) => return Err(e),
    };
    let mut interim = 0;
    let response = loop {
        let parsed = read_head(conn, head_request, &mut progress).await?;
        let status = parsed.parts.status;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // Looked up only now: a hashed lookup every request would pay for a rare answer.
            if complete && head.headers.contains_key(header::UPGRADE) {
                return Ok(Response::from_parts(
                    parsed.parts,
                    OriginBody::upgraded(pooled),
                ));
            }
            return Err(SendError::malformed(
                "101 without an upgrade request",
                progress,
            ));
        }
        // `100 Continue`, `103 Early Hints`: the final response follows.
        if !status.is_informational() {
            break parsed;
        }
        interim += 1;
        if interim > MAX_INTERIM {
            return Err(SendError::malformed("too many interim responses", progress));
        }
    };
    let Head {
        parts,
        framing,
        keep_alive,
    } = response;
    let keep_alive = keep_alive && complete;
    let whole = match framing {
        Framing::Empty => Some(Bytes::new()),
        Framing::Length(len) if conn.read.len() as u64 >= len => {
            Some(take(&mut conn.read, len as usize))
        }
        _ => None,
    };
    let body = match whole {
        // The exchange is over before the client has a byte: the connection can serve the next
        // request at once.
        Some(data) => {
            if keep_alive {
                pooled.release();
            }
            OriginBody::whole(data)
        }
        None => OriginBody::reading(pooled, framing, keep_alive, body_timeout),
    };
    Ok(Response::from_parts(parts, body))
}

/// Interim (1xx) responses passed over at most, before the final one.
const MAX_INTERIM: usize = 16;

/// Sends a streaming body while watching for the origin's answer. An origin may answer before it
/// has read the whole request (a 413 to an upload, an early error, or a response it streams while
/// it reads) and stop reading: sending the body before reading anything would then stall both
/// sides until the response timeout. Returns whether the whole body went out: `false` when the
/// origin's final answer (or its end) came first.
async fn send_body<B>(
    conn: &mut Connection,
    body: Streaming<'_, B>,
    progress: &mut Progress,
) -> Result<bool, SendError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let Connection { stream, read, .. } = conn;
    let (mut reader, mut writer) = stream.split();
    let writing = body.write(&mut writer, progress);
    tokio::pin!(writing);
    loop {
        make_room(read, READ_SIZE);
        tokio::select! {
            biased;
            done = &mut writing => return done.map(|()| true),
            got = reader.read_buf(read) => match got {
                // What the origin said before it closed or failed, if anything, is read next.
                Ok(0) | Err(_) => return Ok(false),
                Ok(_) if read.len() > MAX_HEAD_SIZE || has_final_head(read) => return Ok(false),
                // Nothing final yet (a `100 Continue`, part of a head): keep sending.
                Ok(_) => {}
            },
        }
    }
}

/// Reads until a response head is complete and parses it.
async fn read_head(
    conn: &mut Connection,
    head_request: bool,
    progress: &mut Progress,
) -> Result<Head, SendError> {
    loop {
        if !conn.read.is_empty() {
            *progress = Progress::Answered;
            match parse_head(&mut conn.read, &mut conn.scratch, head_request) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(what) => return Err(SendError::malformed(what, *progress)),
            }
        }
        match conn.read_more(READ_SIZE).await {
            Ok(0) => return Err(SendError::closed(*progress)),
            Ok(_) => {}
            Err(e) => return Err(SendError::io(e, *progress)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use http_body::Frame;
    use http_body_util::{BodyExt, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::pool::{PoolConfig, UpstreamPool};

    /// A body of the given frames, as a client's streamed upload would be.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn parts(builder: http::request::Builder) -> http::request::Parts {
        builder.body(()).expect("request").into_parts().0
    }

    /// `head` without a body, on a connection from `pool`, with a body timeout.
    async fn send_timed(
        pool: &UpstreamPool,
        head: &http::request::Parts,
        body_timeout: Option<Duration>,
    ) -> Response<OriginBody> {
        let conn = pool.checkout().await.expect("checkout");
        conn.send(head, [], Payload::<Empty<Bytes>>::Empty, body_timeout)
            .await
            .expect("response")
    }

    async fn send_empty(pool: &UpstreamPool, head: &http::request::Parts) -> Response<OriginBody> {
        send_timed(pool, head, None).await
    }

    /// An origin for one connection: reads until `done` says the request is complete, writes
    /// `reply`, then echoes what else comes. Resolves to the request's bytes.
    async fn origin(
        reply: impl Into<Vec<u8>>,
        done: fn(&[u8]) -> bool,
    ) -> (UpstreamPool, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let reply = reply.into();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !done(&seen) {
                let n = socket.read(&mut buf).await.expect("read");
                assert!(n > 0, "the request ended early: {seen:?}");
                seen.extend_from_slice(&buf[..n]);
            }
            socket.write_all(&reply).await.expect("write");
            while let Ok(n @ 1..) = socket.read(&mut buf).await {
                socket.write_all(&buf[..n]).await.expect("echo");
            }
            seen
        });
        (UpstreamPool::new(address, PoolConfig::default()), task)
    }

    #[tokio::test]
    async fn a_streamed_body_without_a_length_goes_chunked_with_its_trailers() {
        let (pool, origin) = origin(b"HTTP/1.1 204 No Content\r\n\r\n", |seen| {
            seen.ends_with(b"\r\n\r\n") && seen.windows(5).any(|w| w == b"\r\n0\r\n")
        })
        .await;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-sum", HeaderValue::from_static("1"));
        let mut body = Frames(VecDeque::from([
            Frame::data(Bytes::from("hello")),
            Frame::data(Bytes::from(" world, again")),
            Frame::trailers(trailers),
        ]));
        let head = parts(http::Request::post("/up"));
        let conn = pool.checkout().await.expect("checkout");
        let response = conn
            .send(&head, [], Payload::Stream(&mut body), None)
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        drop(response);
        // Closes the connection (idle in the pool), which ends the origin's task.
        drop(pool);
        assert_eq!(
            String::from_utf8(origin.await.expect("origin")).expect("text"),
            "POST /up HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n\
             5\r\nhello\r\nd\r\n world, again\r\n0\r\nx-sum: 1\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn an_upgrade_hands_over_the_socket_with_what_came_after_the_101() {
        let (pool, _origin) = origin(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\nfirst",
            |seen| seen.ends_with(b"\r\n\r\n"),
        )
        .await;
        let head = parts(http::Request::get("/ws").header(header::UPGRADE, "x"));
        let response = send_empty(&pool, &head).await;
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let mut upgraded = response.into_body().into_upgraded().expect("upgraded");
        assert_eq!(&upgraded.read_ahead[..], b"first");
        upgraded.stream.write_all(b"ping").await.expect("write");
        let mut echo = [0u8; 4];
        upgraded.stream.read_exact(&mut echo).await.expect("echo");
        assert_eq!(&echo, b"ping");
        assert_eq!(pool.stats().idle, 0, "an upgraded connection is not pooled");
    }

    #[tokio::test]
    async fn a_long_body_streams_in_frames_and_then_frees_the_connection() {
        // 100,000 bytes: more than one read, and the end of the body is the end of the buffer.
        let mut long = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n".to_vec();
        long.resize(long.len() + 100_000, b'x');
        let (pool, _origin) = origin(long, |seen| seen.ends_with(b"\r\n\r\n")).await;
        let response = send_empty(&pool, &parts(http::Request::get("/big"))).await;
        let mut body = response.into_body();
        let mut frames = 0;
        let mut length = 0;
        while let Some(frame) = body.frame().await {
            length += frame.expect("frame").into_data().expect("data").len();
            frames += 1;
        }
        assert_eq!(length, 100_000);
        assert!(frames > 1, "streamed, not gathered");
        assert_eq!(pool.stats().idle, 1, "back in the pool at the body's end");
    }

    #[tokio::test]
    async fn a_body_is_cut_when_the_origin_pauses_longer_than_the_body_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        // Three pauses shorter than the timeout (together longer than it), then silence.
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await.expect("request");
            let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n";
            socket.write_all(head).await.expect("head");
            for piece in ["one", "two", "three"] {
                tokio::time::sleep(Duration::from_millis(150)).await;
                socket.write_all(piece.as_bytes()).await.expect("piece");
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let pool = UpstreamPool::new(address, PoolConfig::default());
        let timeout = Some(Duration::from_millis(300));
        let response = send_timed(&pool, &parts(http::Request::get("/slow")), timeout).await;
        let mut body = response.into_body();
        let mut got = Vec::new();
        let error = loop {
            match body.frame().await {
                Some(Ok(frame)) => got.extend_from_slice(&frame.into_data().expect("data")),
                Some(Err(e)) => break e,
                None => panic!("the body ended without its 100 bytes"),
            }
        };
        assert_eq!(
            got, b"onetwothree",
            "pauses shorter than the timeout are waited out"
        );
        assert!(matches!(error, crate::BodyError::TimedOut), "{error}");
        assert_eq!(pool.stats().idle, 0, "the connection is closed, not pooled");
    }

    #[tokio::test]
    async fn a_chunked_body_whose_end_came_with_its_data_ends_with_that_frame() {
        let (pool, _origin) = origin(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            |seen| seen.ends_with(b"\r\n\r\n"),
        )
        .await;
        let response = send_empty(&pool, &parts(http::Request::get("/chunked"))).await;
        let mut body = response.into_body();
        let frame = body.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().expect("data"), "hello");
        assert!(
            body.is_end_stream(),
            "the last chunk was read with the data"
        );
        assert_eq!(pool.stats().idle, 1, "back in the pool with the last frame");
        assert!(body.frame().await.is_none());
    }
}
