//! Events emitted while the seed manager's state lock is held are delivered
//! after it is released, in the order they were emitted.
//!
//! Every component of a host emits through one [`HeldEvents`] in front of
//! the hub. Delivering an event is not cheap — the hub updates seed health,
//! calls every listener (the embedded host's outbox copies the event, the
//! daemon fans it out to observers) and queues it for its step — and when
//! that ran under the state lock it was a third of what the lock covered
//! for a GERMINATE, so commands for different seeds queued behind each
//! other's telemetry. Now a thread that holds the lock (it says so with
//! [`HeldEvents::hold`]) only appends the event to a queue; whoever
//! releases the lock delivers the queue ([`HeldEvents::release`]).
//!
//! Order: events are queued under the state lock, so the queue is in the
//! order decisions were applied. Delivery takes the queue's turn lock and
//! drains it whole, and an event emitted by a thread that holds no state
//! lock joins the queue and is delivered with it, so no event ever
//! overtakes one emitted before it. CRITICAL events wait for the release
//! too — a few microseconds, before the call that caused them returns.
//!
//! Waiting: every event queued gets a number, and a release returns once
//! the events up to its own last one are delivered — by itself, or by the
//! thread delivering at that moment, which drains what was queued
//! meanwhile. So a release that finds the turn taken first spins briefly
//! watching the delivered count (on another core, the deliverer usually
//! finishes within microseconds) before it sleeps on the turn lock: with 4
//! controller threads a quarter of the submitting threads' sleeps were on
//! this lock. A release with nothing undelivered takes no lock at all.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use kasmina_core::TelemetrySink;
use leyline::TelemetryEvent;

thread_local! {
    /// How many `Holding` marks this thread has (the state lock is not
    /// reentrant, so 0 or 1 in practice).
    static HOLDING: Cell<u32> = const { Cell::new(0) };
    /// Whether this thread is delivering (inside a listener): what it
    /// emits or releases then joins the queue that delivery is draining,
    /// instead of waiting for the turn it already has.
    static DELIVERING: Cell<bool> = const { Cell::new(false) };
}

/// The sink every component of one host emits through; see the module docs.
pub struct HeldEvents {
    inner: Arc<dyn TelemetrySink>,
    queued: Mutex<Queue>,
    /// Events delivered so far (a prefix of those ever queued).
    delivered: AtomicU64,
    /// Whoever delivers holds this, so deliveries never interleave.
    turn: Mutex<()>,
}

#[derive(Default)]
struct Queue {
    events: Vec<TelemetryEvent>,
    /// Events ever queued: the last one in `events` is number `pushed`.
    pushed: u64,
}

/// How often a release re-reads the delivered count, while another thread
/// delivers, before it sleeps on the turn lock (each a spin-loop hint:
/// tens of nanoseconds; all of them about the cost of one delivery).
const SPINS_BEFORE_SLEEP: u32 = 64;

/// While alive, this thread's events wait in the queue. Not `Send`: the
/// mark belongs to the thread that holds the state lock.
#[must_use = "events are held only while the mark is alive"]
pub struct Holding {
    _not_send: PhantomData<*const ()>,
}

impl Drop for Holding {
    fn drop(&mut self) {
        HOLDING.with(|h| h.set(h.get().saturating_sub(1)));
    }
}

impl HeldEvents {
    /// Delivers to `inner` (the hub).
    pub fn new(inner: Arc<dyn TelemetrySink>) -> Self {
        HeldEvents { inner, queued: Mutex::new(Queue::default()), delivered: AtomicU64::new(0), turn: Mutex::new(()) }
    }

    /// Marks this thread as holding the state lock: its events are queued
    /// until the mark is dropped and [`release`](Self::release) is called.
    pub fn hold() -> Holding {
        HOLDING.with(|h| h.set(h.get() + 1));
        Holding { _not_send: PhantomData }
    }

    /// Delivers everything queued, in order (call with no state lock held,
    /// after the [`Holding`] mark is dropped).
    pub fn release(&self) {
        if DELIVERING.with(Cell::get) {
            return;
        }
        // This thread's events are numbered at most this.
        let mine = lock(&self.queued).pushed;
        self.deliver_through(mine);
    }

    /// [`TelemetrySink::emit`], callable without the trait in scope.
    pub fn emit(&self, event: TelemetryEvent) {
        <Self as TelemetrySink>::emit(self, event);
    }

    /// Events queued and not yet delivered.
    pub fn queued(&self) -> usize {
        lock(&self.queued).events.len()
    }

    /// Returns once events 1..=`count` are delivered (see "Waiting" in the
    /// module docs).
    fn deliver_through(&self, count: u64) {
        let mut spins = 0;
        loop {
            if self.delivered.load(Ordering::Acquire) >= count {
                return;
            }
            match self.turn.try_lock() {
                Ok(_turn) => return self.deliver_queued(),
                Err(TryLockError::Poisoned(turn)) => {
                    let _turn = turn.into_inner();
                    return self.deliver_queued();
                }
                Err(TryLockError::WouldBlock) if spins < SPINS_BEFORE_SLEEP => {
                    spins += 1;
                    std::hint::spin_loop();
                }
                Err(TryLockError::WouldBlock) => {
                    let _turn = lock(&self.turn);
                    // Whoever held it drained the queue; whatever is left
                    // (queued since) is delivered here.
                    return self.deliver_queued();
                }
            }
        }
    }

    /// Delivers until the queue is empty (with the turn held).
    fn deliver_queued(&self) {
        DELIVERING.with(|d| d.set(true));
        let _reset = ResetDelivering;
        loop {
            let (batch, through) = {
                let mut queue = lock(&self.queued);
                (std::mem::take(&mut queue.events), queue.pushed)
            };
            if batch.is_empty() {
                return;
            }
            for event in batch {
                self.inner.emit(event);
            }
            self.delivered.store(through, Ordering::Release);
        }
    }

    /// Queues `event`; returns its number.
    fn push(&self, event: TelemetryEvent) -> u64 {
        let mut queue = lock(&self.queued);
        queue.events.push(event);
        queue.pushed += 1;
        queue.pushed
    }
}

impl TelemetrySink for HeldEvents {
    fn emit(&self, event: TelemetryEvent) {
        let number = self.push(event);
        if HOLDING.with(Cell::get) > 0 || DELIVERING.with(Cell::get) {
            return;
        }
        self.deliver_through(number);
    }
}

impl std::fmt::Debug for HeldEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldEvents").field("queued", &self.queued()).finish_non_exhaustive()
    }
}

/// Clears the delivering mark, also when a listener panics.
struct ResetDelivering;

impl Drop for ResetDelivering {
    fn drop(&mut self) {
        DELIVERING.with(|d| d.set(false));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking listener cannot leave the queue half-updated: pushes and
    // takes are single operations. (It leaves `delivered` behind until the
    // next batch: later releases then take the turn lock, and find the
    // queue drained.)
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use leyline::TelemetryLevel;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<String>>);
    impl TelemetrySink for Recorded {
        fn emit(&self, event: TelemetryEvent) {
            self.0.lock().unwrap().push(event.name);
        }
    }

    fn event(name: &str) -> TelemetryEvent {
        TelemetryEvent::new(name, TelemetryLevel::Info, "m", 0)
    }

    #[test]
    fn events_wait_while_held_and_leave_in_order_on_release() {
        let recorded = Arc::new(Recorded::default());
        let held = HeldEvents::new(recorded.clone());
        held.emit(event("before"));
        let mark = HeldEvents::hold();
        held.emit(event("a"));
        held.emit(event("b"));
        assert_eq!(*recorded.0.lock().unwrap(), ["before"], "nothing delivered while held");
        assert_eq!(held.queued(), 2);
        drop(mark);
        held.release();
        assert_eq!(*recorded.0.lock().unwrap(), ["before", "a", "b"]);
        assert_eq!(held.queued(), 0);
    }

    #[test]
    fn an_event_from_a_thread_not_holding_never_overtakes_queued_ones() {
        let recorded = Arc::new(Recorded::default());
        let held = Arc::new(HeldEvents::new(recorded.clone()));
        let mark = HeldEvents::hold();
        held.emit(event("applied-first"));
        // Another thread, not holding: it delivers the queue before its own.
        let other = Arc::clone(&held);
        std::thread::spawn(move || other.emit(event("later"))).join().unwrap();
        assert_eq!(*recorded.0.lock().unwrap(), ["applied-first", "later"]);
        drop(mark);
        held.release();
        assert_eq!(recorded.0.lock().unwrap().len(), 2, "released nothing twice");
    }

    /// A listener that emits, or takes and releases the state lock (a
    /// command submitted from a listener), neither deadlocks nor reorders.
    #[test]
    fn a_listener_that_emits_again_queues_behind_what_is_being_delivered() {
        struct Echo {
            names: Mutex<Vec<String>>,
            back: Mutex<Option<Arc<HeldEvents>>>,
        }
        impl TelemetrySink for Echo {
            fn emit(&self, event: TelemetryEvent) {
                self.names.lock().unwrap().push(event.name.clone());
                if event.name == "a" {
                    let back = self.back.lock().unwrap().clone().unwrap();
                    let mark = HeldEvents::hold();
                    back.emit(event_named("echo-held"));
                    drop(mark);
                    back.release();
                    back.emit(event_named("echo"));
                }
            }
        }
        fn event_named(name: &str) -> TelemetryEvent {
            TelemetryEvent::new(name, TelemetryLevel::Info, "m", 0)
        }
        let echo = Arc::new(Echo { names: Mutex::new(Vec::new()), back: Mutex::new(None) });
        let held = Arc::new(HeldEvents::new(echo.clone()));
        *echo.back.lock().unwrap() = Some(Arc::clone(&held));
        let mark = HeldEvents::hold();
        held.emit(event("a"));
        held.emit(event("b"));
        drop(mark);
        held.release();
        assert_eq!(*echo.names.lock().unwrap(), ["a", "b", "echo-held", "echo"]);
        held.emit(event("after"));
        assert_eq!(echo.names.lock().unwrap().last().map(String::as_str), Some("after"), "the mark was cleared");
    }

    /// A release that finds another thread delivering returns only once
    /// its own events are delivered (here by that thread). Negative
    /// control: a release that returns as soon as it sees the turn taken
    /// fails the first assertion.
    #[test]
    fn a_release_returns_only_after_its_events_are_delivered_by_whoever_delivers() {
        use std::sync::mpsc;
        struct Slow {
            names: Mutex<Vec<String>>,
            started: Mutex<mpsc::Sender<()>>,
            go: Mutex<mpsc::Receiver<()>>,
        }
        impl TelemetrySink for Slow {
            fn emit(&self, event: TelemetryEvent) {
                if event.name == "slow" {
                    self.started.lock().unwrap().send(()).unwrap();
                    self.go.lock().unwrap().recv().unwrap();
                }
                self.names.lock().unwrap().push(event.name);
            }
        }
        let (started_tx, started) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let slow =
            Arc::new(Slow { names: Mutex::new(Vec::new()), started: Mutex::new(started_tx), go: Mutex::new(go_rx) });
        let held = Arc::new(HeldEvents::new(slow.clone()));
        let deliverer = std::thread::spawn({
            let held = Arc::clone(&held);
            move || held.emit(event("slow"))
        });
        started.recv().unwrap();
        let releaser = std::thread::spawn({
            let (held, slow) = (Arc::clone(&held), Arc::clone(&slow));
            move || {
                let mark = HeldEvents::hold();
                held.emit(event("mine"));
                drop(mark);
                held.release();
                slow.names.lock().unwrap().clone()
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(30));
        go.send(()).unwrap();
        let seen_on_return = releaser.join().unwrap();
        deliverer.join().unwrap();
        assert_eq!(seen_on_return, ["slow", "mine"], "release returned before its event was delivered");
        assert_eq!(held.queued(), 0);
    }

    #[test]
    fn the_mark_is_per_thread() {
        let recorded = Arc::new(Recorded::default());
        let held = Arc::new(HeldEvents::new(recorded.clone()));
        let _mark = HeldEvents::hold();
        let other = Arc::clone(&held);
        std::thread::spawn(move || other.emit(event("direct"))).join().unwrap();
        assert_eq!(*recorded.0.lock().unwrap(), ["direct"], "another thread's event is not held");
    }
}
