//! A response body as it comes from the origin, decoded from its framing, and the end of the
//! exchange that comes with its last byte: the connection goes back to its pool then.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::conn::{Connection, MAX_READ_SIZE, READ_SIZE};
use crate::error::BodyError;
use crate::pool::PooledConn;
use crate::response::{parse_chunk_size, parse_trailers, take, Framing};

/// The body of an origin's response.
pub struct OriginBody {
    inner: Inner,
}

enum Inner {
    /// The whole body, read with the head: its connection is back in the pool already.
    Whole(Option<Bytes>),
    /// The rest comes from the connection (boxed: the body travels inside every response, which
    /// hyper moves several times, and this is the larger and rarer case).
    Reading(Box<Reader>),
    /// A `101 Switching Protocols`: the connection belongs to whoever takes it.
    Upgraded(Box<PooledConn>),
}

struct Reader {
    conn: PooledConn,
    decode: Decode,
    /// The connection may carry another request once the body has ended.
    keep_alive: bool,
    /// The longest pause allowed between two pieces of the body (`None`: no limit).
    timeout: Option<Duration>,
    /// Armed the first time the body waits on the origin, and pushed back after each wait that
    /// ended with data (one clock read per wait, none per frame).
    stall: Option<Pin<Box<Sleep>>>,
    /// A frame came since the stall timer was last set.
    progressed: bool,
}

enum Decode {
    /// Bytes left.
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Bytes left in the current chunk.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: the trailer section.
    Trailers,
    /// The body has ended.
    Done,
}

/// An upgraded connection (a WebSocket, say): the socket, and what the origin sent after its 101
/// that was read with the head.
#[derive(Debug)]
pub struct Upgraded {
    pub stream: TcpStream,
    pub read_ahead: Bytes,
}

impl OriginBody {
    pub(crate) fn whole(data: Bytes) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self {
            inner: Inner::Whole(data),
        }
    }

    pub(crate) fn upgraded(conn: PooledConn) -> Self {
        Self {
            inner: Inner::Upgraded(Box::new(conn)),
        }
    }

    /// The rest of the body, from the connection. `framing` is not `Empty`.
    pub(crate) fn reading(
        conn: PooledConn,
        framing: Framing,
        keep_alive: bool,
        timeout: Option<Duration>,
    ) -> Self {
        let decode = match framing {
            Framing::Length(len) => Decode::Length(len),
            Framing::Chunked => Decode::Chunked(Chunk::Size),
            Framing::UntilClose | Framing::Empty => Decode::UntilClose,
        };
        Self {
            inner: Inner::Reading(Box::new(Reader {
                timeout,
                conn,
                decode,
                keep_alive,
                stall: None,
                progressed: false,
            })),
        }
    }

    /// The rest of the body is still to be read from the origin's connection, which it holds.
    pub fn holds_connection(&self) -> bool {
        matches!(self.inner, Inner::Reading(_))
    }

    /// The connection of a `101 Switching Protocols` response, now the tunnel's.
    pub fn into_upgraded(self) -> Option<Upgraded> {
        match self.inner {
            Inner::Upgraded(conn) => {
                let Connection { stream, read, .. } = (*conn).into_connection()?;
                Some(Upgraded {
                    stream,
                    read_ahead: read.freeze(),
                })
            }
            _ => None,
        }
    }

    /// The body has ended: a reusable connection goes back to its pool.
    fn finish(&mut self) {
        if let Inner::Reading(reader) = std::mem::replace(&mut self.inner, Inner::Whole(None)) {
            if reader.keep_alive {
                reader.conn.release();
            }
        }
    }
}

impl std::fmt::Debug for OriginBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginBody").finish_non_exhaustive()
    }
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let reader = match &mut this.inner {
            Inner::Whole(data) => return Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Inner::Upgraded(_) => return Poll::Ready(None),
            Inner::Reading(reader) => reader,
        };
        let polled = reader.poll_frame(cx);
        match &polled {
            // The last frame releases the connection at once, not on a poll that may never come.
            Poll::Ready(Some(Ok(_))) => {
                if reader.at_end() {
                    this.finish();
                }
            }
            Poll::Ready(None) => this.finish(),
            // A broken body leaves the connection in an unknown state: it is closed.
            Poll::Ready(Some(Err(_))) => this.inner = Inner::Whole(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Whole(data) => data.is_none(),
            Inner::Upgraded(_) => true,
            Inner::Reading(reader) => reader.at_end(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Whole(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Inner::Upgraded(_) => SizeHint::with_exact(0),
            Inner::Reading(reader) => match reader.decode {
                Decode::Length(left) => SizeHint::with_exact(left),
                _ => SizeHint::default(),
            },
        }
    }
}

impl Reader {
    fn at_end(&self) -> bool {
        matches!(
            self.decode,
            Decode::Length(0) | Decode::Chunked(Chunk::Done)
        )
    }

    /// The next frame, or the body timeout when the origin has gone quiet for that long.
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = self.poll_decode(cx);
        if polled.is_ready() {
            self.progressed = true;
            return polled;
        }
        let Some(timeout) = self.timeout else {
            return Poll::Pending;
        };
        // Waiting on the origin from now: the pause starts here.
        match &mut self.stall {
            None => self.stall = Some(Box::pin(tokio::time::sleep(timeout))),
            Some(stall) if self.progressed => stall.as_mut().reset(Instant::now() + timeout),
            Some(_) => {}
        }
        self.progressed = false;
        match self.stall.as_mut().map(|s| s.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Some(Err(BodyError::TimedOut))),
            _ => Poll::Pending,
        }
    }

    fn poll_decode(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.at_end() {
            return Poll::Ready(None);
        }
        let Some(conn) = self.conn.connection() else {
            return Poll::Ready(Some(Err(BodyError::Truncated)));
        };
        loop {
            match &mut self.decode {
                Decode::Length(left) => {
                    if !conn.read.is_empty() {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(conn.read.len());
                        *left -= n as u64;
                        return Poll::Ready(Some(Ok(Frame::data(take(&mut conn.read, n)))));
                    }
                    let want = usize::try_from(*left).unwrap_or(MAX_READ_SIZE);
                    if ready!(fill(conn, cx, want))? {
                        return Poll::Ready(Some(Err(BodyError::Truncated)));
                    }
                }
                Decode::UntilClose => {
                    if !conn.read.is_empty() {
                        let n = conn.read.len();
                        return Poll::Ready(Some(Ok(Frame::data(take(&mut conn.read, n)))));
                    }
                    if ready!(fill(conn, cx, MAX_READ_SIZE))? {
                        return Poll::Ready(None);
                    }
                }
                Decode::Chunked(chunk) => {
                    if let Some(frame) = decode_chunk(chunk, conn)? {
                        return Poll::Ready(frame.map(Ok));
                    }
                    if ready!(fill(conn, cx, READ_SIZE))? {
                        return Poll::Ready(Some(Err(BodyError::Truncated)));
                    }
                }
            }
        }
    }
}

/// Reads more; `true` at the end of the stream.
fn fill(conn: &mut Connection, cx: &mut Context<'_>, want: usize) -> Poll<Result<bool, BodyError>> {
    match ready!(conn.poll_read_more(cx, want)) {
        Ok(0) => Poll::Ready(Ok(true)),
        Ok(_) => Poll::Ready(Ok(false)),
        Err(e) => Poll::Ready(Err(BodyError::Io(e))),
    }
}

/// After a chunk's data: when the body's usual ending (the chunk's CRLF, then the last chunk
/// with no extensions and no trailers) is buffered already, it is taken now, so that the data
/// frame just decoded is the body's last: the connection goes back to the pool with it, and the
/// client's side need not poll again to learn that the body has ended. Any other ending is left
/// for the next poll.
fn end_early(chunk: &mut Chunk, buf: &mut BytesMut) {
    const LAST: &[u8] = b"\r\n0\r\n\r\n";
    if buf.starts_with(LAST) {
        let _ = buf.split_to(LAST.len());
        *chunk = Chunk::Done;
    }
}

/// One step of chunked decoding on what is buffered. `Ok(None)`: more bytes are needed;
/// `Ok(Some(None))`: the body has ended (the connection is then ready for the next response).
fn decode_chunk(
    chunk: &mut Chunk,
    conn: &mut Connection,
) -> Result<Option<Option<Frame<Bytes>>>, BodyError> {
    let buf = &mut conn.read;
    loop {
        match chunk {
            Chunk::Size => match parse_chunk_size(buf).map_err(BodyError::Malformed)? {
                Some((used, size)) => {
                    let _ = buf.split_to(used);
                    *chunk = if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    };
                }
                None => return Ok(None),
            },
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= n as u64;
                let data = take(buf, n);
                if *left == 0 {
                    *chunk = Chunk::DataEnd;
                    end_early(chunk, buf);
                }
                return Ok(Some(Some(Frame::data(data))));
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(None);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(BodyError::Malformed("chunk data not followed by CRLF"));
                }
                let _ = buf.split_to(2);
                *chunk = Chunk::Size;
            }
            Chunk::Trailers => {
                let Some(trailers) = parse_trailers(buf).map_err(BodyError::Malformed)? else {
                    return Ok(None);
                };
                *chunk = Chunk::Done;
                return Ok(Some(
                    (!trailers.is_empty()).then(|| Frame::trailers(trailers)),
                ));
            }
            Chunk::Done => return Ok(Some(None)),
        }
    }
}
