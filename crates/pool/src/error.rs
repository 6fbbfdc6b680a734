//! What can go wrong in an exchange with an origin, and how far it had got.

use std::error::Error;
use std::fmt;
use std::io;

pub type BoxError = Box<dyn Error + Send + Sync>;

/// How far an exchange got before it failed: what decides whether the request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Progress {
    /// No byte of the request was written.
    Unsent,
    /// The request (or part of it) was written; no byte of a response came.
    Sent,
    /// Some of a response came.
    Answered,
}

#[derive(Debug)]
enum Kind {
    /// The connection failed: reset, or another socket error.
    Io(io::Error),
    /// The origin closed the connection.
    Closed,
    /// The origin's response is not HTTP/1.1 as it must be (an unparsable head, conflicting
    /// lengths, a bad chunk).
    Malformed(&'static str),
    /// The request body could not be read (the client's fault: too large, too slow, malformed).
    Body(BoxError),
}

/// An exchange that failed before the response head was complete.
#[derive(Debug)]
pub struct SendError {
    kind: Kind,
    progress: Progress,
}

impl SendError {
    pub(crate) fn io(error: io::Error, progress: Progress) -> Self {
        Self {
            kind: Kind::Io(error),
            progress,
        }
    }

    pub(crate) fn closed(progress: Progress) -> Self {
        Self {
            kind: Kind::Closed,
            progress,
        }
    }

    pub(crate) fn malformed(what: &'static str, progress: Progress) -> Self {
        Self {
            kind: Kind::Malformed(what),
            progress,
        }
    }

    pub(crate) fn body(error: BoxError, progress: Progress) -> Self {
        Self {
            kind: Kind::Body(error),
            progress,
        }
    }

    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// The connection went away (closed or reset) after the request was written and before any
    /// response byte: on a reused connection, the origin closing it while idle (the keep-alive
    /// race), so the request never reached the application.
    pub fn is_unanswered_close(&self) -> bool {
        self.progress == Progress::Sent && matches!(self.kind, Kind::Io(_) | Kind::Closed)
    }

    /// The request body's own error, when reading it is what failed.
    pub fn body_error(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        match &self.kind {
            Kind::Body(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Io(e) => write!(f, "connection error: {e}"),
            Kind::Closed if self.progress == Progress::Answered => {
                f.write_str("connection closed before the response head was complete")
            }
            Kind::Closed => f.write_str("connection closed before a response"),
            Kind::Malformed(what) => write!(f, "malformed response: {what}"),
            Kind::Body(e) => write!(f, "request body: {e}"),
        }
    }
}

impl Error for SendError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.kind {
            Kind::Io(e) => Some(e),
            Kind::Body(e) => Some(e.as_ref()),
            Kind::Closed | Kind::Malformed(_) => None,
        }
    }
}

/// A response body that could not be read to its end. The client's response is cut short (the
/// connection to it closed, or its HTTP/2 stream reset), as hyper did.
#[derive(Debug)]
pub enum BodyError {
    Io(io::Error),
    /// The origin closed the connection before the body's end.
    Truncated,
    Malformed(&'static str),
    /// The origin sent nothing for the body timeout.
    TimedOut,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Io(e) => write!(f, "response body: {e}"),
            BodyError::Truncated => f.write_str("response body: connection closed before its end"),
            BodyError::Malformed(what) => write!(f, "malformed response body: {what}"),
            BodyError::TimedOut => {
                f.write_str("response body: the origin sent nothing for the body timeout")
            }
        }
    }
}

impl Error for BodyError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            BodyError::Io(e) => Some(e),
            _ => None,
        }
    }
}
