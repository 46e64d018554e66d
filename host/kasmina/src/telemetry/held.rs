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
//! lock first delivers whatever is queued, so no event ever overtakes one
//! emitted before it. CRITICAL events wait for the release too — a few
//! microseconds, before the call that caused them returns.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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
    queued: Mutex<Vec<TelemetryEvent>>,
    /// Whoever delivers holds this, so deliveries never interleave.
    turn: Mutex<()>,
}

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
        HeldEvents { inner, queued: Mutex::new(Vec::new()), turn: Mutex::new(()) }
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
        let _turn = lock(&self.turn);
        self.deliver_queued();
    }

    /// [`TelemetrySink::emit`], callable without the trait in scope.
    pub fn emit(&self, event: TelemetryEvent) {
        <Self as TelemetrySink>::emit(self, event);
    }

    /// Events queued and not yet delivered.
    pub fn queued(&self) -> usize {
        lock(&self.queued).len()
    }

    /// Delivers until the queue is empty (with the turn held).
    fn deliver_queued(&self) {
        DELIVERING.with(|d| d.set(true));
        let _reset = ResetDelivering;
        loop {
            let queued = std::mem::take(&mut *lock(&self.queued));
            if queued.is_empty() {
                return;
            }
            for event in queued {
                self.inner.emit(event);
            }
        }
    }
}

impl TelemetrySink for HeldEvents {
    fn emit(&self, event: TelemetryEvent) {
        if HOLDING.with(Cell::get) > 0 || DELIVERING.with(Cell::get) {
            lock(&self.queued).push(event);
            return;
        }
        let _turn = lock(&self.turn);
        lock(&self.queued).push(event);
        self.deliver_queued();
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
    // takes are single operations.
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
