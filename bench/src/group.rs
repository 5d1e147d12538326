//! A group task: opens its share of the run's clients (paced by the connect schedule, at most
//! [`MAX_CONNECTS_IN_FLIGHT`] handshakes in flight across the run), then drives all of them from
//! one hand-written poll loop: one wakeup serves every connection that is ready, a single ticker
//! serves keepalives and rate-limited publishing for the whole group, and counters reach the
//! shared atomics only every 100 ms, so nothing shared is touched per message.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::client::{ClientSpec, Conn, READ_SIZE, Settings, establish};
use crate::flow::{GroupStats, Role, RunTimes};
use crate::stats::{Budget, ErrorLog, Timeline, new_histogram, record_us};

/// Connections per group task.
pub const GROUP_SIZE: usize = 64;
/// Handshakes in flight at once across the run.
pub const MAX_CONNECTS_IN_FLIGHT: usize = 500;
/// How often counters are published to the coordinator.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// What the coordinator and all group tasks share.
#[derive(Debug)]
pub struct Control {
    /// Run settings.
    pub settings: Settings,
    /// Bounds handshakes in flight.
    pub connect_slots: Semaphore,
    /// Duplicate-tracking memory.
    pub budget: Budget,
    /// Cancelled when the run ends (after the drain) or is aborted.
    pub stop: CancellationToken,
    /// Set once by the coordinator when publishing starts.
    pub go: watch::Receiver<Option<RunTimes>>,
    /// Messages sent, flushed every 100 ms.
    pub sent: AtomicU64,
    /// Messages acknowledged (QoS 1/2), flushed every 100 ms.
    pub acked: AtomicU64,
    /// First deliveries, flushed every 100 ms.
    pub unique: AtomicU64,
    /// Publishers that have stopped publishing.
    pub pubs_done: AtomicU64,
    /// The latest time a publisher stopped ([`crate::stats::now_ns`] clock).
    pub pub_end_ns: AtomicU64,
}

/// A group's connect phase is over.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    /// Clients connected.
    pub connected: usize,
    /// Clients that failed to connect.
    pub failed: usize,
}

/// What a group hands back at the end.
#[derive(Debug)]
pub struct GroupReport {
    /// Final state of every connected client.
    pub roles: Vec<Role>,
    /// Latency, timelines, errors.
    pub stats: GroupStats,
    /// Handshake latency in µs.
    pub connect_latency: Histogram<u64>,
    /// Handshake failures by message.
    pub connect_errors: ErrorLog,
    /// Clients connected.
    pub connected: usize,
    /// Clients that failed to connect.
    pub failed: usize,
    /// First handshake start and last handshake end.
    pub connect_span: Option<(Instant, Instant)>,
    /// Connections lost during the run.
    pub lost_connections: usize,
}

type ConnectResult = (ClientSpec, Instant, Instant, Result<Conn>);

async fn connect_one(c: ClientSpec, at: Instant, ctl: &Control) -> ConnectResult {
    tokio::time::sleep_until(at.into()).await;
    let Ok(_permit) = ctl.connect_slots.acquire().await else {
        let now = Instant::now();
        return (c, now, now, Err(anyhow!("connect slots closed")));
    };
    let t0 = Instant::now();
    let s = &ctl.settings;
    let r = match tokio::time::timeout(s.connect_timeout, establish(&c, s)).await {
        Ok(Ok((stream, leftover, early))) => {
            Ok(Conn::new(stream, leftover, early, &c.role, s, &ctl.budget))
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(anyhow!(
            "no CONNACK/SUBACK within {} s",
            s.connect_timeout.as_secs_f64()
        )),
    };
    (c, t0, Instant::now(), r)
}

/// Runs one group from connect to disconnect. `base` is the start of its connect phase.
pub async fn run_group(
    clients: Vec<ClientSpec>,
    base: Instant,
    ctl: Arc<Control>,
    ready: mpsc::UnboundedSender<Ready>,
) -> Result<GroupReport> {
    let mut connect_latency = new_histogram()?;
    let mut connect_errors = ErrorLog::default();
    let mut span: Option<(Instant, Instant)> = None;
    let mut conns = Vec::with_capacity(clients.len());
    let mut failed = 0;
    {
        let mut pending: FuturesUnordered<_> = clients
            .into_iter()
            .map(|c| {
                let at = base + c.connect_at;
                connect_one(c, at, &ctl)
            })
            .collect();
        loop {
            let next = tokio::select! {
                _ = ctl.stop.cancelled() => break,
                next = pending.next() => next,
            };
            let Some((_, t0, t1, r)) = next else { break };
            match r {
                Ok(conn) => {
                    record_us(
                        &mut connect_latency,
                        t1.duration_since(t0).as_micros() as u64,
                    );
                    span = Some(span.map_or((t0, t1), |(a, b)| (a.min(t0), b.max(t1))));
                    conns.push(conn);
                }
                Err(e) => {
                    failed += 1;
                    connect_errors.add(format!("{e:#}"));
                }
            }
        }
    }
    let connected = conns.len();
    // The coordinator may have stopped waiting; a closed channel is not our error.
    let _ = ready.send(Ready { connected, failed });

    let mut runner = Runner::new(conns, ctl.clone())?;
    tokio::task::unconstrained(async {
        while let Step::More = poll_fn(|cx| runner.poll_step(cx)).await {
            tokio::task::yield_now().await;
        }
    })
    .await;
    runner.flush();

    let mut lost_connections = 0;
    {
        let mut bye: FuturesUnordered<_> = runner
            .conns
            .iter_mut()
            .filter(|c| {
                lost_connections += usize::from(c.dead);
                !c.dead
            })
            .map(|c| c.disconnect())
            .collect();
        let all = async { while bye.next().await.is_some() {} };
        // Best effort: a broker that stopped reading does not hold the run.
        let _ = tokio::time::timeout(Duration::from_secs(2), all).await;
    }
    Ok(GroupReport {
        roles: runner.conns.into_iter().map(|c| c.role).collect(),
        stats: runner.stats,
        connect_latency,
        connect_errors,
        connected,
        failed,
        connect_span: span,
        lost_connections,
    })
}

enum Step {
    /// Some connection has work ready: yield to the scheduler, then step again.
    More,
    /// The run is over.
    Stop,
}

type GoFuture = Pin<Box<dyn Future<Output = Option<RunTimes>> + Send>>;

struct Runner {
    conns: Vec<Conn>,
    ctl: Arc<Control>,
    scratch: BytesMut,
    stats: GroupStats,
    ticker: Interval,
    go: Option<GoFuture>,
    times: Option<RunTimes>,
    stop: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    rotate: usize,
    last_flush: Instant,
    done_reported: u64,
}

fn ticker(period: Duration) -> Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

impl Runner {
    fn new(conns: Vec<Conn>, ctl: Arc<Control>) -> Result<Runner> {
        let mut rx = ctl.go.clone();
        let go: GoFuture =
            Box::pin(async move { rx.wait_for(Option::is_some).await.ok()?.as_ref().copied() });
        Ok(Runner {
            conns,
            scratch: BytesMut::with_capacity(READ_SIZE),
            stats: GroupStats {
                latency: new_histogram()?,
                received: Timeline::default(),
                sent: Timeline::default(),
                errors: ErrorLog::default(),
                pings: 0,
                pongs: 0,
                unflushed: [0; 3],
            },
            ticker: ticker(FLUSH_EVERY),
            go: Some(go),
            times: None,
            stop: Box::pin(ctl.stop.clone().cancelled_owned()),
            rotate: 0,
            last_flush: Instant::now(),
            done_reported: 0,
            ctl,
        })
    }

    fn start(&mut self, t: RunTimes) {
        self.times = Some(t);
        let rate = self.ctl.settings.rate;
        if rate > 0.0 {
            // Often enough that a publisher sends about one message per tick, within 1-20 ms.
            let period = (1.0 / rate).clamp(0.001, 0.02);
            self.ticker = ticker(Duration::from_secs_f64(period));
        }
        for c in &mut self.conns {
            if let Err(e) = c.process_buffered(Some(&t), &self.ctl.budget, &mut self.stats) {
                c.kill();
                self.stats.errors.add(format!("connection lost: {e:#}"));
            }
        }
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        if self.stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Step::Stop);
        }
        if let Some(go) = &mut self.go {
            if let Poll::Ready(t) = go.as_mut().poll(cx) {
                self.go = None;
                match t {
                    Some(t) => self.start(t),
                    None => return Poll::Ready(Step::Stop),
                }
            }
        }
        if self.times.is_none() {
            // The start may have been announced without this task being woken for it yet (its
            // wake-up came from a socket): read the announcement directly, so that messages of
            // this run are never taken for leftovers of an earlier one.
            let announced = *self.ctl.go.borrow();
            if let Some(t) = announced {
                self.go = None;
                self.start(t);
            }
        }
        let mut ticked = false;
        while self.ticker.poll_tick(cx).is_ready() {
            ticked = true;
        }
        let now = Instant::now();
        if ticked {
            self.on_tick(now);
        }
        let mut more = false;
        let n = self.conns.len();
        let s = &self.ctl.settings;
        for k in 0..n {
            let c = &mut self.conns[(k + self.rotate) % n];
            if c.dead {
                continue;
            }
            let r = c.poll_io(
                cx,
                now,
                &mut self.scratch,
                self.times.as_ref(),
                s,
                &self.ctl.budget,
                &mut self.stats,
            );
            match r {
                Ok(m) => more |= m,
                Err(e) => {
                    c.kill();
                    self.stats.errors.add(format!("connection lost: {e:#}"));
                }
            }
        }
        self.rotate = self.rotate.wrapping_add(1);
        if more {
            Poll::Ready(Step::More)
        } else {
            Poll::Pending
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let s = &self.ctl.settings;
        let keepalive = Duration::from_secs(u64::from(s.keepalive));
        for c in self.conns.iter_mut().filter(|c| !c.dead) {
            c.keepalive(now, keepalive, &mut self.stats);
            if let (Some(t), true) = (&self.times, s.rate > 0.0) {
                c.publish_due(now, t, s, &mut self.stats);
            }
        }
        if now.duration_since(self.last_flush) >= FLUSH_EVERY {
            self.last_flush = now;
            self.flush();
        }
    }

    /// Adds this group's new counts to the shared counters.
    fn flush(&mut self) {
        let [sent, acked, unique] = std::mem::take(&mut self.stats.unflushed);
        let c = &self.ctl;
        c.sent.fetch_add(sent, Ordering::Relaxed);
        c.acked.fetch_add(acked, Ordering::Relaxed);
        c.unique.fetch_add(unique, Ordering::Relaxed);
        let (mut done, mut end) = (0, 0);
        for c in &self.conns {
            if let Role::Pub(p) = &c.role {
                if p.done {
                    done += 1;
                    end = end.max(p.done_ns);
                }
            }
        }
        if done > self.done_reported {
            c.pub_end_ns.fetch_max(end, Ordering::Relaxed);
            c.pubs_done
                .fetch_add(done - self.done_reported, Ordering::Relaxed);
            self.done_reported = done;
        }
    }
}
