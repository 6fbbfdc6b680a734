//! One HTTP/1.1 connection to an origin: the socket and the two buffers that outlive its
//! requests.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::response::HeadScratch;

/// Room made before a read when less than [`MIN_ROOM`] is left: enough for a typical response
/// head and a small body in one read.
pub(crate) const READ_SIZE: usize = 8 * 1024;
/// Reads of a long body ask for up to this much at once: each read becomes one frame, and one
/// write to the client, so larger reads mean fewer system calls on both sides (hyper's buffer
/// grew to 400 KiB).
pub(crate) const MAX_READ_SIZE: usize = 256 * 1024;
/// Less room than this, and a read first makes more.
const MIN_ROOM: usize = 2 * 1024;

pub(crate) struct Connection {
    pub(crate) stream: TcpStream,
    /// Bytes read and not yet consumed. Response heads and bodies are split off it without a
    /// copy, so the next response is read into what is left of the same allocation; when that
    /// runs low and the earlier pieces are gone, `reserve` takes the allocation back instead of
    /// making a new one. (hyper reserved a full 8 KiB before every read, which reallocated the
    /// shared buffer each time.)
    pub(crate) read: BytesMut,
    /// The request head being written; its capacity is kept from request to request.
    pub(crate) write: Vec<u8>,
    /// Scratch space for parsing response heads, kept likewise.
    pub(crate) scratch: HeadScratch,
    /// The worker whose reactor the socket is registered with, whose idle stack it returns to.
    pub(crate) home: usize,
}

impl Connection {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            read: BytesMut::new(),
            write: Vec::new(),
            scratch: HeadScratch::default(),
            home: 0,
        }
    }

    /// Whether an idle connection can take a request: the origin has neither closed it nor sent
    /// anything unasked. No task watches an idle connection; the reactor's readiness says whether
    /// anything arrived since the last read, and only then is the socket asked (one `recv`).
    pub(crate) fn is_usable(&self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                // `WouldBlock`: the readiness was stale (the last read filled the buffer exactly),
                // and is cleared now. Anything else is the end, an error or stray bytes.
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Going idle: buffers grown by a long body or a large head are let go of, so that an idle
    /// connection holds at most a few KiB.
    pub(crate) fn trim(&mut self) {
        if self.read.capacity() > 2 * READ_SIZE {
            self.read = BytesMut::new();
        }
        if self.write.capacity() > 2 * READ_SIZE {
            self.write = Vec::new();
        }
    }

    /// Reads more into `read`, making room for about `want` bytes first when little is left.
    /// `Ok(0)` is the end of the stream.
    pub(crate) async fn read_more(&mut self, want: usize) -> io::Result<usize> {
        make_room(&mut self.read, want);
        self.stream.read_buf(&mut self.read).await
    }

    /// [`read_more`](Self::read_more) for a body's `poll_frame`.
    pub(crate) fn poll_read_more(
        &mut self,
        cx: &mut Context<'_>,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        make_room(&mut self.read, want);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read)
    }
}

/// Room for about `want` more bytes (a read into a full `BytesMut` would return 0, which reads
/// as the end of the stream): made when less than [`MIN_ROOM`] is left, or, for a long body, less
/// than half of what it wants.
pub(crate) fn make_room(buf: &mut BytesMut, want: usize) {
    let want = want.clamp(READ_SIZE, MAX_READ_SIZE);
    let room = buf.capacity() - buf.len();
    if room < MIN_ROOM || room < want / 2 {
        buf.reserve(want);
    }
}
