//! A second, independent look at request framing, for the one smuggling vector hyper forgives.
//!
//! hyper follows RFC 9112 §6.3 when a request carries both `Content-Length` and
//! `Transfer-Encoding`: it drops `Content-Length`, reads the body as chunked and closes the
//! connection afterwards. That is safe, but the product's ruling is stricter (400 and close, as
//! nginx and HAProxy do), and the handler cannot see the dropped header. So [`FramingAudit`] follows
//! the client's byte stream alongside hyper: it finds each request head, notes whether it has
//! both headers, and skips the body by the same framing rules so that it stays aligned with hyper.
//! The cost is one scan of each head's line starts, and an `httparse` pass over the heads that may
//! frame a body or switch protocols; body bytes are skipped, not copied.
//!
//! When the audit loses track (bytes it cannot parse, an upgraded connection), it stops: hyper
//! itself rejects what is malformed, so the audit only ever adds rejections, never removes them.

/// Heads larger than this are hyper's to reject (431); the audit gives up on them.
const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug)]
enum State {
    /// Collecting a request head (leading empty lines skipped).
    Head,
    /// Skipping a `Content-Length` body.
    Length(u64),
    Chunked(Chunk),
    /// Lost track; audit nothing more on this connection.
    Off,
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Reading the hex size line (digits, then extensions until LF).
    Size {
        size: u64,
        digits: bool,
        in_ext: bool,
    },
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd {
        seen_cr: bool,
    },
    /// Trailer lines after the last chunk, until an empty line.
    Trailer {
        line_len: usize,
    },
}

#[derive(Debug)]
pub struct FramingAudit {
    state: State,
    head: Vec<u8>,
    heads: u64,
    /// 1-based index of the first head with both `Content-Length` and `Transfer-Encoding`.
    ambiguous: Option<u64>,
}

impl Default for FramingAudit {
    fn default() -> Self {
        Self::new()
    }
}

impl FramingAudit {
    pub fn new() -> Self {
        Self {
            state: State::Head,
            head: Vec::new(),
            heads: 0,
            ambiguous: None,
        }
    }

    /// The 1-based index of the first ambiguous request head seen so far, if any.
    pub fn ambiguous(&self) -> Option<u64> {
        self.ambiguous
    }

    /// Feeds bytes as they arrive from the client.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            data = match self.state {
                State::Off => return,
                State::Head => self.feed_head(data),
                State::Length(n) => {
                    let take = n.min(data.len() as u64);
                    self.state = if take == n {
                        State::Head
                    } else {
                        State::Length(n - take)
                    };
                    &data[take as usize..]
                }
                State::Chunked(c) => self.feed_chunked(c, data),
            };
        }
    }

    /// Lets go of the buffer kept for heads that straddle reads (an idle connection parks).
    pub fn release_buffer(&mut self) {
        if self.head.is_empty() {
            self.head = Vec::new();
        }
    }

    fn feed_head<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let mut data = data;
        if self.head.is_empty() {
            let skip = data
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            data = &data[skip..];
            if data.is_empty() {
                return data;
            }
            // The usual case: the whole head in one read, inspected where it lies, its end and
            // its framing lines found in the same pass.
            if let Some((end, frames)) = scan_head(data) {
                self.state = self.inspect_head(&data[..end], frames);
                return &data[end..];
            }
        }
        // Search from a little before the new bytes, in case the terminator straddles reads.
        let from = self.head.len().saturating_sub(3);
        self.head.extend_from_slice(data);
        let Some(end) = find_head_end(&self.head[from..]).map(|i| from + i + 4) else {
            if self.head.len() > MAX_HEAD {
                self.state = State::Off;
            }
            return &[];
        };
        let consumed_from_data = end - (self.head.len() - data.len());
        let head = std::mem::take(&mut self.head);
        let frames = scan_head(&head[..end]).is_some_and(|(_, frames)| frames);
        self.state = self.inspect_head(&head[..end], frames);
        self.head = head;
        self.head.clear();
        &data[consumed_from_data..]
    }

    /// Parses a complete head and decides how its body is framed. `may_frame` is `scan_head`'s
    /// verdict on it.
    fn inspect_head(&mut self, head: &[u8], may_frame: bool) -> State {
        // Most requests (GET, HEAD) have no header that frames a body or switches protocols:
        // nothing to follow but the next head, and no second parse of this one.
        if !may_frame {
            self.heads += 1;
            return State::Head;
        }
        // Uninitialised slots: filling 256 empty headers would cost more than the parse.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 256];
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(head, &mut headers) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return State::Off,
        }
        self.heads += 1;
        let mut length = None;
        let mut te = None;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if length.is_none() {
                    return State::Off;
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = Some(h.value);
            }
        }
        if te.is_some() && length.is_some() && self.ambiguous.is_none() {
            self.ambiguous = Some(self.heads);
        }
        let upgrade = req
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
        if upgrade || req.method == Some("CONNECT") {
            return State::Off; // bytes after a possible upgrade are not HTTP
        }
        match (te, length) {
            (Some(v), _) if last_coding_is_chunked(v) => State::Chunked(Chunk::Size {
                size: 0,
                digits: false,
                in_ext: false,
            }),
            (Some(_), _) => State::Off, // hyper answers 400 and closes
            (None, Some(n)) if n > 0 => State::Length(n),
            _ => State::Head,
        }
    }

    fn feed_chunked<'a>(&mut self, mut c: Chunk, data: &'a [u8]) -> &'a [u8] {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            c = match c {
                Chunk::Size {
                    size,
                    digits,
                    in_ext,
                } => {
                    i += 1;
                    match b {
                        b'\n' if digits && size == 0 => Chunk::Trailer { line_len: 0 },
                        b'\n' if digits => Chunk::Data(size),
                        b'\r' => Chunk::Size {
                            size,
                            digits,
                            in_ext,
                        },
                        _ if in_ext => c,
                        b';' | b' ' | b'\t' if digits => Chunk::Size {
                            size,
                            digits,
                            in_ext: true,
                        },
                        _ => match (b as char).to_digit(16) {
                            Some(d) if size < (1 << 59) => Chunk::Size {
                                size: size * 16 + u64::from(d),
                                digits: true,
                                in_ext,
                            },
                            _ => {
                                self.state = State::Off;
                                return &[];
                            }
                        },
                    }
                }
                Chunk::Data(n) => {
                    let take = n.min((data.len() - i) as u64);
                    i += take as usize;
                    if take == n {
                        Chunk::DataEnd { seen_cr: false }
                    } else {
                        Chunk::Data(n - take)
                    }
                }
                Chunk::DataEnd { seen_cr } => {
                    i += 1;
                    match (b, seen_cr) {
                        (b'\r', false) => Chunk::DataEnd { seen_cr: true },
                        (b'\n', true) => Chunk::Size {
                            size: 0,
                            digits: false,
                            in_ext: false,
                        },
                        _ => {
                            self.state = State::Off;
                            return &[];
                        }
                    }
                }
                Chunk::Trailer { line_len } => {
                    i += 1;
                    match b {
                        b'\n' if line_len == 0 => {
                            self.state = State::Head;
                            return &data[i..];
                        }
                        b'\n' => Chunk::Trailer { line_len: 0 },
                        b'\r' => Chunk::Trailer { line_len },
                        _ => Chunk::Trailer {
                            line_len: line_len + 1,
                        },
                    }
                }
            };
        }
        self.state = State::Chunked(c);
        &[]
    }
}

fn last_coding_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The end of a head. A searcher built once: `memmem::find` would build one per call.
static HEAD_END: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));

fn find_head_end(haystack: &[u8]) -> Option<usize> {
    HEAD_END.find(haystack)
}

/// Finds the end of the head at the start of `data` (the index just past its `\r\n\r\n`) and
/// tells whether it may carry `Content-Length`, `Transfer-Encoding` or `Upgrade`, or be a
/// `CONNECT`: a line starting with one of those names, in any case. A false positive only costs
/// the full parse. One pass over the line ends does both: heads are short, and two searches
/// (a `memmem` for the end, then the line starts) cost more than the bytes.
fn scan_head(data: &[u8]) -> Option<(usize, bool)> {
    const NAMES: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"upgrade"];
    let mut frames = data.starts_with(b"CONNECT");
    for i in memchr::memchr_iter(b'\n', data) {
        if i >= 3 && &data[i - 3..=i] == b"\r\n\r\n" {
            return Some((i + 1, frames));
        }
        let line = &data[i + 1..];
        frames |= NAMES
            .iter()
            .any(|name| line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(parts: &[&[u8]]) -> FramingAudit {
        let mut a = FramingAudit::new();
        for p in parts {
            a.feed(p);
        }
        a
    }

    #[test]
    fn both_orders_of_cl_and_te_are_flagged() {
        let cl_first = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let te_first = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n";
        assert_eq!(audit(&[cl_first]).ambiguous(), Some(1));
        assert_eq!(audit(&[te_first]).ambiguous(), Some(1));
    }

    #[test]
    fn stays_aligned_across_bodies_and_split_reads() {
        // A CL body and a chunked body whose contents look like headers, then the ambiguous head
        // as the third request, fed whole and one byte at a time.
        let body = "Content-Length: 1\r\nTransfer-Encoding: x\r\n\r\n";
        let chunk = "Content-Length: 9\r\n\r\n\r\n\r\n";
        let stream = format!(
            "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}\
             POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x};ext=1\r\n{chunk}\r\n0\r\nX-Trailer: 1\r\n\r\n\
             GET /c HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
            body.len(),
            chunk.len()
        );
        let bytes: Vec<&[u8]> = stream.as_bytes().chunks(1).collect();
        assert_eq!(audit(&bytes).ambiguous(), Some(3));
        assert_eq!(audit(&[stream.as_bytes()]).ambiguous(), Some(3));
    }

    #[test]
    fn ordinary_traffic_is_not_flagged() {
        let stream: &[u8] = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcPOST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let a = audit(&[stream]);
        assert_eq!(a.ambiguous(), None);
        assert_eq!(a.heads, 3);
        assert!(matches!(a.state, State::Head));
    }

    #[test]
    fn gives_up_on_what_it_cannot_follow() {
        let a = audit(&[b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"]);
        assert_eq!(
            a.ambiguous(),
            None,
            "bytes after an upgrade are not requests"
        );
        let garbage = audit(&[b"garbage\r\nContent-Length: 1\r\n\r\n"]);
        assert!(matches!(garbage.state, State::Off));
    }

    #[test]
    fn framing_headers_are_found_in_any_case() {
        let mixed =
            b"GET / HTTP/1.1\r\nHost: a\r\ncOnTeNt-LeNgTh: 0\r\ntRaNsFeR-eNcOdInG: chunked\r\n\r\n";
        assert_eq!(audit(&[mixed]).ambiguous(), Some(1));
        let upgrade = audit(&[b"GET / HTTP/1.1\r\nUPGRADE: h2c\r\n\r\n"]);
        assert!(matches!(upgrade.state, State::Off));
        let connect = audit(&[b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"]);
        assert!(matches!(connect.state, State::Off));
        // Heads without them are still counted, so the index of a later ambiguous one is right.
        let plain = b"GET /1 HTTP/1.1\r\nHost: a\r\nX-Content-Length: 5\r\n\r\n";
        assert_eq!(audit(&[plain, plain, mixed]).ambiguous(), Some(3));
    }
}
