//! The parking lot: where the engine's idle plain HTTP/1 connections wait for their client's next
//! request without a task, a buffer or a tokio registration of their own.
//!
//! An idle keep-alive connection is most connections on a busy proxy, and what it costs is what
//! bounds how many a proxy can hold. nginx keeps an idle one as a ~200-byte struct in a
//! preallocated array plus its epoll entry. Parked in its own task (see `listener::PARK_AFTER`),
//! a connection still kept the task (~1.5 KiB), tokio's readiness slot and the watchdog, and the
//! allocator could not give the pages they were scattered over back: 5 KB a connection. Here a
//! parked connection is a socket in one epoll set (through mio) and a slot holding its context by
//! value in one slab, with its deadline in a heap: under 300 bytes (docs/performance.md).
//!
//! One lot serves every worker, driven by a thread of its own (`gatehouse-park`) that blocks in
//! `epoll_wait` until a parked socket is readable or the earliest keep-alive deadline. Parking
//! and resuming are rare by construction (a connection parks after `PARK_AFTER` idle), so the
//! lot's mutex and the hop back to the connection's worker are off the per-request path. When a
//! parked socket becomes readable (the next request, or the client closing), the lot takes it
//! out and spawns a fresh connection task for it on the worker that parked it
//! (`listener::resume_parked`). When its keep-alive runs out, or the engine drains, the lot
//! closes it, as nginx closes an idle keep-alive connection.
//!
//! A thread rather than a task on a worker: a task would wait on the epoll set through tokio's
//! `AsyncFd`, whose registration is `unsafe` (I/O safety) since tokio 1.54.
//!
//! TLS connections are not parked here: their session state lives in rustls and cannot wait
//! outside a task as a bare socket; they park in their own task.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::Shared;
use crate::listener::ListenerRuntime;
use crate::proxy::{ConnContext, ConnSlot};

/// Readiness events taken from the lot's epoll set per call.
const EVENTS: usize = 256;
/// The token of the lot's [`Waker`]; parked connections use their slot number.
const WAKE: Token = Token(usize::MAX);
/// The thread name (the benchmark harness counts every `gatehouse*` thread's CPU time).
const THREAD_NAME: &str = "gatehouse-park";

/// The engine's parking lot. See the module documentation.
pub(crate) struct ParkingLot {
    /// Registers and deregisters parked sockets with the lot's epoll set.
    registry: Registry,
    /// Wakes the lot's thread: a connection parked with an earlier deadline, or the lot stops.
    waker: Waker,
    spaces: parking_lot::Mutex<Spaces>,
    /// Whether the lot's thread still runs: connections only park while it does.
    open: AtomicBool,
}

/// A parked connection's context: what [`ConnContext`] holds beyond the activity record, which
/// starts afresh when the connection resumes.
pub(crate) struct ParkedConn {
    slot: Option<ConnSlot>,
    peer: std::net::SocketAddr,
    scheme: &'static str,
    listener: Arc<ListenerRuntime>,
    shared: Arc<Shared>,
}

impl From<ConnContext> for ParkedConn {
    fn from(ctx: ConnContext) -> Self {
        Self {
            slot: ctx.slot.into_inner(),
            peer: ctx.peer,
            scheme: ctx.scheme,
            listener: ctx.listener,
            shared: ctx.shared,
        }
    }
}

impl From<ParkedConn> for ConnContext {
    fn from(parked: ParkedConn) -> Self {
        Self::new(parked.slot, parked.peer, parked.listener, parked.shared)
            .with_scheme(parked.scheme)
    }
}

/// A parked connection.
struct Space {
    stream: std::net::TcpStream,
    ctx: ParkedConn,
    /// The worker that parked it, which resumes it.
    worker: Handle,
    /// Tells this parking apart from an earlier one in the same slot (see `Spaces::deadlines`).
    parking: u64,
}

#[derive(Default)]
struct Spaces {
    taken: Slab<Space>,
    /// Keep-alive deadlines, earliest first, with the slot and parking they were set for. A
    /// connection that resumes leaves its deadline behind; it is skipped when it comes up, and
    /// the heap is compacted when such leftovers outnumber the parked connections.
    deadlines: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    parkings: u64,
}

impl Spaces {
    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _, _))| *at)
    }

    fn compact(&mut self) {
        if self.deadlines.len() > 2 * self.taken.len() + 1024 {
            let taken = &self.taken;
            self.deadlines.retain(|Reverse((_, parking, slot))| {
                taken.get(*slot).is_some_and(|s| s.parking == *parking)
            });
        }
    }

    /// Takes the connections whose keep-alive ran out by `now` out of the lot.
    fn expired(&mut self, now: Instant) -> Vec<Space> {
        let mut expired = Vec::new();
        while let Some(&Reverse((at, parking, slot))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if self.taken.get(slot).is_some_and(|s| s.parking == parking) {
                expired.push(self.taken.remove(slot));
            }
        }
        expired
    }
}

/// Closes a parked connection (dropping the socket takes it out of the epoll set too).
fn close(space: Space) {
    let stats = &space.ctx.shared.stats;
    stats.connections_parked.fetch_sub(1, Ordering::Relaxed);
}

impl ParkingLot {
    /// Starts the lot's thread. Resumed connections become tasks tracked by `connections`.
    pub fn start(
        connections: TaskTracker,
        draining: CancellationToken,
    ) -> io::Result<(Arc<Self>, JoinHandle<()>)> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        let lot = Arc::new(Self {
            registry,
            waker,
            spaces: parking_lot::Mutex::default(),
            open: AtomicBool::new(true),
        });
        let driven = Arc::clone(&lot);
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || driven.run(poll, &connections, &draining))?;
        Ok((lot, thread))
    }

    /// Closes every parked connection and ends the lot's thread (join it afterwards).
    pub fn stop(&self) {
        self.open.store(false, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            tracing::error!(error = %e, "cannot wake the parking lot");
        }
    }

    /// Whether connections can park here (the caller otherwise waits in its own task).
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Parks an idle connection until its client writes again or `deadline` passes. Called from
    /// the connection's task, on its worker. A socket that cannot be parked (the lot stopped,
    /// or the kernel refuses) is closed: it was idle, and a client retries a request on an idle
    /// connection that closes.
    pub fn park(&self, stream: TcpStream, ctx: ParkedConn, deadline: Instant) {
        let peer = ctx.peer;
        let Ok(worker) = Handle::try_current() else {
            return;
        };
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot park connection; closed");
                return;
            }
        };
        let mut spaces = self.spaces.lock();
        // Checked under the lock: the lot's thread marks itself stopped before it takes the lock
        // to close what is parked, so a connection parked after that check would stay forever.
        if !self.is_open() {
            return;
        }
        let slot = spaces.taken.vacant_key();
        let fd = stream.as_raw_fd();
        if let Err(e) = self
            .registry
            .register(&mut SourceFd(&fd), Token(slot), Interest::READABLE)
        {
            tracing::debug!(%peer, error = %e, "cannot park connection; closed");
            return;
        }
        ctx.shared
            .stats
            .connections_parked
            .fetch_add(1, Ordering::Relaxed);
        spaces.parkings += 1;
        let parking = spaces.parkings;
        spaces.taken.insert(Space {
            stream,
            ctx,
            worker,
            parking,
        });
        let earliest = spaces.next_deadline().is_none_or(|at| deadline < at);
        spaces.deadlines.push(Reverse((deadline, parking, slot)));
        spaces.compact();
        drop(spaces);
        if earliest {
            // The lot's thread sleeps until the deadline it knew of.
            let _ = self.waker.wake();
        }
    }

    /// Takes a parked connection out of the lot: out of the epoll set and the parked count.
    fn take(&self, slot: usize) -> Option<Space> {
        let space = self.spaces.lock().taken.try_remove(slot)?;
        let stats = &space.ctx.shared.stats;
        stats.connections_parked.fetch_sub(1, Ordering::Relaxed);
        let fd = space.stream.as_raw_fd();
        // Left registered, the socket would keep reporting to this slot once it is reused.
        match self.registry.deregister(&mut SourceFd(&fd)) {
            Ok(()) => Some(space),
            Err(e) => {
                tracing::debug!(peer = %space.ctx.peer, error = %e, "cannot resume parked connection; closed");
                None
            }
        }
    }

    /// The lot's thread: resumes connections whose client wrote (or closed) on the worker that
    /// parked them, and closes those whose keep-alive ran out, until the lot stops.
    fn run(
        self: &Arc<Self>,
        mut poll: Poll,
        connections: &TaskTracker,
        draining: &CancellationToken,
    ) {
        let mut events = Events::with_capacity(EVENTS);
        while self.is_open() {
            let timeout = self
                .spaces
                .lock()
                .next_deadline()
                .map(|at| at.saturating_duration_since(Instant::now()));
            match poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "parking lot failed; closing its connections");
                    break;
                }
            }
            for event in events.iter().filter(|e| e.token() != WAKE) {
                if let Some(space) = self.take(event.token().0) {
                    let resume = crate::listener::resume_parked(
                        space.stream,
                        ConnContext::from(space.ctx),
                        draining.clone(),
                        Arc::clone(self),
                    );
                    connections.spawn_on(resume, &space.worker);
                }
            }
            let expired = self.spaces.lock().expired(Instant::now());
            expired.into_iter().for_each(close);
        }
        self.open.store(false, Ordering::Release);
        let parked: Vec<_> = {
            let mut spaces = self.spaces.lock();
            spaces.deadlines.clear();
            spaces.taken.drain().collect()
        };
        parked.into_iter().for_each(close);
    }
}

impl std::fmt::Debug for ParkingLot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkingLot").finish_non_exhaustive()
    }
}
