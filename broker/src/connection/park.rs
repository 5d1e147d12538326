//! Idle plain-TCP connections, parked outside the runtime.
//!
//! A connected client that has nothing to say costs a tokio task (its state machine, at least a
//! few hundred bytes, in practice kilobytes) and a tokio I/O registration (256 bytes) for as long
//! as it stays connected, and most MQTT clients are idle most of the time. So a plain-TCP
//! connection that has been quiet for a moment gives both up: its task ends, and what is left of
//! it (the socket, the session state it owns, the will, timers as two numbers:
//! [`Parked`](super::Parked)) waits here in a slab while one thread watches all parked sockets
//! with its own `epoll` instance (mio). Nothing else changes for the client: the session stays
//! online and owned, and the connection keeps its place under `maxConnections`.
//!
//! A parked connection is resumed, as a new task with a new tokio registration, when
//! * its socket becomes readable (a packet, or the client closing it),
//! * its session is signalled (a message in its inbox),
//! * its owner is kicked (takeover, shutdown drain), or
//! * its keepalive deadline passes (the resumed task then closes it).
//!
//! tokio cannot wait for a socket without a task and a registration, and no crate keeps
//! connection state parked this way, hence this module. Parking and resuming cost a few
//! microseconds each (two `epoll_ctl` calls and a task spawn), which is why only connections
//! quiet for [`PARK_AFTER`] park.
//!
//! Wake-ups come from two directions: the socket (epoll events, token = slab key and
//! generation) and the session's and owner's [`Signal`](crate::session::Signal)s, whose waker is
//! replaced by one that queues the token here. An entry is *armed* only once those wakers are in
//! place and the signals re-checked; a wake-up that arrives before is remembered and acted on
//! by the arming, so the resumed task's own waker can never be overwritten by a late park waker.

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use parking_lot::Mutex;
use slab::Slab;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

use super::Parked;
use crate::broker::Broker;

/// How long a connection has to be quiet (nothing read, written or delivered) before it parks.
/// Long enough that a client exchanging a message every second or so stays a task, short
/// enough that an idle client costs a task only briefly.
pub const PARK_AFTER: Duration = Duration::from_secs(2);

/// Keepalive deadlines of parked connections are checked at most this often (a client that
/// went silent is closed at most this much later than 1.5 × its keepalive).
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// The token of the thread's own waker (slab tokens carry a generation in the high half and
/// never reach it).
const WAKE: Token = Token(usize::MAX);

/// A connection's place under `maxConnections`: a semaphore permit while it runs as a task.
/// A parked connection holds nothing (the permit is forgotten, so it stays taken); the task
/// that resumes it gets a slot that gives the permit back when the connection ends.
#[derive(Debug)]
pub(crate) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    gives_back: Option<Arc<Semaphore>>,
}

impl Slot {
    /// The slot of a connection holding `permit`.
    pub(crate) fn held(permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            permit: Some(permit),
            gives_back: None,
        }
    }

    /// Keeps the place taken without holding anything.
    fn park(mut self) {
        if let Some(p) = self.permit.take() {
            p.forget();
        }
        self.gives_back = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(limit) = self.gives_back.take() {
            limit.add_permits(1);
        }
    }
}

/// The parking area of one server: cheap to clone.
#[derive(Debug, Clone)]
pub struct Parking {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    registry: Registry,
    waker: mio::Waker,
    state: Mutex<State>,
    runtime: tokio::runtime::Handle,
    broker: Arc<Broker>,
    /// The connection limit, for the permits of parked connections.
    limit: Arc<Semaphore>,
    /// Resumed connections run as tracked tasks (the shutdown waits for them).
    tracker: TaskTracker,
    stopped: AtomicBool,
    gauge: prometheus::IntGauge,
}

#[derive(Debug, Default)]
struct State {
    slab: Slab<Entry>,
    /// Tokens woken through a signal, for the thread to resume.
    ready: Vec<usize>,
    next_gen: u32,
}

#[derive(Debug)]
struct Entry {
    generation: u32,
    armed: bool,
    /// Woken before it was armed: the arming resumes it.
    woken: bool,
    parked: Box<Parked>,
}

fn token(key: usize, generation: u32) -> usize {
    (usize::from(generation as u16) << 32) | (key & 0xffff_ffff)
}

fn split(token: usize) -> (usize, u32) {
    (token & 0xffff_ffff, (token >> 32) as u32)
}

/// The waker a parked connection's signals hold: queues its token for the thread.
struct ParkWake {
    shared: Arc<Shared>,
    token: usize,
}

impl Wake for ParkWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.state.lock().ready.push(self.token);
        if let Err(e) = self.shared.waker.wake() {
            error!(error = %e, "waking the parking thread failed");
        }
    }
}

/// Stops the parking thread when dropped (the server's run ends, or its future is dropped).
#[derive(Debug)]
pub struct ParkingGuard {
    parking: Parking,
}

impl Drop for ParkingGuard {
    fn drop(&mut self) {
        self.parking.shared.stopped.store(true, Ordering::Release);
        let _ = self.parking.shared.waker.wake();
    }
}

impl Parking {
    /// Starts the parking thread of `broker`'s connections; they resume as tasks of `tracker`
    /// on the current runtime. `limit` is the connection limit their permits come from.
    pub fn start(
        broker: Arc<Broker>,
        limit: Arc<Semaphore>,
        tracker: TaskTracker,
    ) -> io::Result<(Parking, ParkingGuard)> {
        // Parked connections keep their times on this clock: start it before any connection.
        crate::session::clock_ms();
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        let shared = Arc::new(Shared {
            registry,
            waker,
            state: Mutex::new(State::default()),
            runtime: tokio::runtime::Handle::current(),
            stopped: AtomicBool::new(false),
            gauge: broker.metrics.connections_parked.clone(),
            broker,
            limit,
            tracker,
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("hmq-park".into())
            .spawn(move || run(poll, thread_shared))?;
        let parking = Parking { shared };
        Ok((
            parking.clone(),
            ParkingGuard {
                parking: parking.clone(),
            },
        ))
    }

    /// The broker the parked connections belong to.
    pub(crate) fn broker(&self) -> &Arc<Broker> {
        &self.shared.broker
    }

    /// Whether the parking thread has stopped (connections then stay tasks).
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::Acquire)
    }

    /// Connections parked now.
    pub fn len(&self) -> usize {
        self.shared.state.lock().slab.len()
    }

    /// Whether no connection is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parks a connection. If anything is already waiting for it, or the socket cannot be
    /// watched, it is resumed at once.
    pub(crate) fn park(&self, parked: Parked, slot: Slot) {
        if self.is_stopped() {
            // Nobody watches any more (the server is gone): stay a task.
            let tracker = &self.shared.tracker;
            tracker.spawn_on(
                super::resume(parked, self.clone(), slot),
                &self.shared.runtime,
            );
            return;
        }
        slot.park();
        let shared = &self.shared;
        let fd = parked.stream().as_raw_fd();
        let session = parked.session().clone();
        let owner = parked.owner().clone();
        let tok = {
            let mut st = shared.state.lock();
            let generation = st.next_gen;
            st.next_gen = st.next_gen.wrapping_add(1) & 0xffff;
            let key = st.slab.insert(Entry {
                generation,
                armed: false,
                woken: false,
                parked: Box::new(parked),
            });
            token(key, generation)
        };
        shared.gauge.inc();
        let mut woken = false;
        if let Err(e) = shared
            .registry
            .register(&mut SourceFd(&fd), Token(tok), Interest::READABLE)
        {
            warn!(error = %e, "cannot watch an idle connection; it stays a task");
            woken = true;
        }
        let waker = Waker::from(Arc::new(ParkWake {
            shared: shared.clone(),
            token: tok,
        }));
        session.notify().register(&waker);
        owner.kicked().register(&waker);
        // Signals raised before the wakers were replaced went to the old task's waker, which
        // is gone: they are pending, look at them now.
        woken |= session.notify().is_pending() || owner.kicked().is_pending();
        let resume_now = {
            let mut st = shared.state.lock();
            let (key, generation) = split(tok);
            match st.slab.get_mut(key) {
                Some(e) if e.generation == generation => {
                    e.armed = true;
                    woken || e.woken
                }
                _ => false,
            }
        };
        if resume_now {
            self.resume(tok);
        }
    }

    /// Takes an armed connection out and spawns its task (stale tokens are ignored; an
    /// unarmed entry is marked for its arming to resume).
    fn resume(&self, tok: usize) {
        let (key, generation) = split(tok);
        // Taken before the connection leaves the slab, so that the shutdown never sees it
        // neither parked nor a task.
        let token = self.shared.tracker.token();
        let parked = {
            let mut st = self.shared.state.lock();
            match st.slab.get_mut(key) {
                Some(e) if e.generation == generation => {
                    if !e.armed {
                        e.woken = true;
                        return;
                    }
                }
                _ => return,
            }
            st.slab.remove(key).parked
        };
        self.shared.gauge.dec();
        let fd = parked.stream().as_raw_fd();
        // Not registered if registering failed; nothing to undo then.
        let _ = self.shared.registry.deregister(&mut SourceFd(&fd));
        let slot = Slot {
            permit: None,
            gives_back: Some(self.shared.limit.clone()),
        };
        self.shared.tracker.spawn_on(
            super::resume(*parked, self.clone(), slot),
            &self.shared.runtime,
        );
        drop(token);
    }
}

/// The parking thread: resumes connections on socket events, signals and keepalive deadlines,
/// until stopped.
fn run(mut poll: Poll, shared: Arc<Shared>) {
    let parking = Parking { shared };
    let mut events = Events::with_capacity(1024);
    let mut last_sweep = Instant::now();
    let mut due = Vec::new();
    loop {
        if parking.is_stopped() {
            break;
        }
        let timeout = SWEEP_EVERY.saturating_sub(last_sweep.elapsed());
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                error!(error = %e, "parking thread: poll failed");
                std::thread::sleep(Duration::from_millis(100));
            }
            continue;
        }
        for ev in events.iter() {
            if ev.token() != WAKE {
                parking.resume(ev.token().0);
            }
        }
        let ready = std::mem::take(&mut parking.shared.state.lock().ready);
        for tok in ready {
            parking.resume(tok);
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            let now = crate::session::clock_ms();
            {
                let st = parking.shared.state.lock();
                due.extend(st.slab.iter().filter_map(|(key, e)| {
                    let late = e.parked.deadline_ms().is_some_and(|d| d <= now);
                    (e.armed && late).then(|| token(key, e.generation))
                }));
            }
            for tok in due.drain(..) {
                parking.resume(tok);
            }
        }
    }
    // Stopped: whatever is still parked is dropped with the thread (sockets closed). A server
    // that ends normally has resumed and closed them all in its drain.
    let left = std::mem::take(&mut parking.shared.state.lock().slab);
    parking.shared.gauge.sub(left.len() as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_never_hit_the_waker() {
        for (key, generation) in [(0, 0), (7, 1), (0xffff_ffff, 0xffff), (12345, 40000)] {
            let t = token(key, generation);
            assert_eq!(split(t), (key, generation));
            assert_ne!(Token(t), WAKE);
        }
    }
}
