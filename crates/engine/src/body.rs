//! The request body as it travels to the origin.
//!
//! Small bodies (up to [`PREFETCH_LIMIT`]) are read completely before the origin is contacted,
//! like nginx's client body buffer: a framing error in them (a bad chunk size, a truncated body)
//! is then answered with 400 before any byte reaches an origin, and the origin gets a plain
//! `Content-Length` body. Larger bodies stream with backpressure: one frame in flight at a time,
//! so a 1 GB upload holds a few buffers, not a gigabyte.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Bodies up to this size are read whole before the origin is contacted.
pub const PREFETCH_LIMIT: usize = 64 * 1024;

/// Why the client's body could not be forwarded.
#[derive(Debug)]
pub enum RequestBodyError {
    /// More than `limits.max_body_size` bytes.
    TooLarge,
    /// The client paused longer than `limits.body_timeout`.
    Timeout,
    /// Bad framing (chunk syntax, short body) or the client went away.
    Client(hyper::Error),
}

impl fmt::Display for RequestBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestBodyError::TooLarge => f.write_str("request body too large"),
            RequestBodyError::Timeout => f.write_str("request body timed out"),
            RequestBodyError::Client(e) => write!(f, "request body: {e}"),
        }
    }
}

impl std::error::Error for RequestBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestBodyError::Client(e) => Some(e),
            _ => None,
        }
    }
}

/// The client's body with the size limit and the idle timeout applied.
pub struct ClientBody {
    buffered: VecDeque<Frame<Bytes>>,
    inner: Incoming,
    max_size: u64,
    received: u64,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
}

impl ClientBody {
    fn new(inner: Incoming, max_size: u64, timeout: Duration) -> Self {
        Self {
            buffered: VecDeque::new(),
            inner,
            max_size,
            received: 0,
            timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn poll_client(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.received += data.len() as u64;
                    if self.received > self.max_size {
                        return Poll::Ready(Some(Err(RequestBodyError::TooLarge)));
                    }
                }
                let deadline = Instant::now() + self.timeout;
                self.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(RequestBodyError::Client(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(RequestBodyError::Timeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// What the proxy sends upstream as the request body.
pub enum UpstreamBody {
    Empty,
    Full(Option<Bytes>),
    Streaming(Box<ClientBody>),
}

impl fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamBody::Empty => f.write_str("Empty"),
            UpstreamBody::Full(b) => write!(f, "Full({:?} bytes)", b.as_ref().map(Bytes::len)),
            UpstreamBody::Streaming(_) => f.write_str("Streaming"),
        }
    }
}

impl UpstreamBody {
    /// Length when the whole body is known (so the origin gets `Content-Length`).
    pub fn known_length(&self) -> Option<u64> {
        match self {
            UpstreamBody::Empty => Some(0),
            UpstreamBody::Full(b) => Some(b.as_ref().map_or(0, |b| b.len() as u64)),
            UpstreamBody::Streaming(_) => None,
        }
    }
}

/// Reads the client's body up to [`PREFETCH_LIMIT`] and decides how to forward it.
pub async fn read_request_body(
    incoming: Incoming,
    max_size: u64,
    timeout: Duration,
) -> Result<UpstreamBody, RequestBodyError> {
    if incoming.is_end_stream() {
        return Ok(UpstreamBody::Empty);
    }
    let mut body = ClientBody::new(incoming, max_size, timeout);
    let mut buffered = 0usize;
    let mut has_trailers = false;
    loop {
        match poll_fn(|cx| body.poll_client(cx)).await {
            Some(Ok(frame)) => {
                buffered += frame.data_ref().map_or(0, Bytes::len);
                has_trailers |= frame.is_trailers();
                body.buffered.push_back(frame);
                if buffered >= PREFETCH_LIMIT {
                    return Ok(UpstreamBody::Streaming(Box::new(body)));
                }
            }
            Some(Err(e)) => return Err(e),
            None if has_trailers => return Ok(UpstreamBody::Streaming(Box::new(body))),
            None => return Ok(collapse(body.buffered, buffered)),
        }
    }
}

/// Joins prefetched data frames into one buffer (without copying when there is just one).
fn collapse(mut frames: VecDeque<Frame<Bytes>>, total: usize) -> UpstreamBody {
    if frames.len() <= 1 {
        return match frames.pop_front().and_then(|f| f.into_data().ok()) {
            Some(data) if !data.is_empty() => UpstreamBody::Full(Some(data)),
            _ => UpstreamBody::Empty,
        };
    }
    let mut joined = BytesMut::with_capacity(total);
    for frame in frames {
        if let Ok(data) = frame.into_data() {
            joined.extend_from_slice(&data);
        }
    }
    UpstreamBody::Full(Some(joined.freeze()))
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            UpstreamBody::Streaming(body) => match body.buffered.pop_front() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None => body.poll_client(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Full(data) => data.is_none(),
            UpstreamBody::Streaming(body) => body.buffered.is_empty() && body.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            UpstreamBody::Streaming(body) => {
                let pending: u64 = body
                    .buffered
                    .iter()
                    .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
                    .sum();
                let rest = body.inner.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + pending);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + pending);
                }
                hint
            }
        }
    }
}
