//! Timer-driven purge of the nonce ledger.
//!
//! The prototype purged only when a new nonce arrived, so a quiet host held
//! expired ids (and their memory) forever. This purger runs on its own OS
//! thread — it works the same whether the caller is synchronous or inside a
//! tokio runtime, and never nests runtimes — and stops within a bounded time.
//!
//! Tests drive it with [`NoncePurger::tick`] (a purge on the purger thread,
//! answered when done) and an injected clock instead of sleeping.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kasmina_core::{Clock, TelemetrySink};
use leyline::{TelemetryEvent, TelemetryLevel};

use super::ledger::NonceLedger;

/// Why the purger could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum PurgerError {
    /// The OS refused to start the thread.
    #[error("cannot start the nonce purger thread: {0}")]
    Spawn(std::io::Error),
    /// The interval is zero.
    #[error("nonce purge interval must be greater than zero")]
    ZeroInterval,
    /// The purger thread has stopped (or panicked).
    #[error("the nonce purger has stopped")]
    Stopped,
    /// The thread did not stop within the bound; it was detached.
    #[error("the nonce purger did not stop within {0:?}")]
    StopTimeout(Duration),
}

enum Message {
    Tick(mpsc::SyncSender<usize>),
    Stop,
}

/// Counts completed purge runs, so a test can wait for the timer to fire
/// without sleeping.
#[derive(Debug, Default)]
struct Runs {
    count: Mutex<u64>,
    changed: Condvar,
}

/// Sends on `done` when the thread exits, however it exits (panics too).
struct ExitSignal(mpsc::SyncSender<()>);

impl Drop for ExitSignal {
    fn drop(&mut self) {
        // The handle may already be gone; nobody is waiting then.
        let _ = self.0.try_send(());
    }
}

/// Handle of the background purger thread. Dropping it asks the thread to
/// stop without waiting; call [`NoncePurger::stop`] to wait (bounded).
#[derive(Debug)]
pub struct NoncePurger {
    tx: mpsc::Sender<Message>,
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
    runs: Arc<Runs>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Tick(_) => "Tick",
            Message::Stop => "Stop",
        })
    }
}

impl NoncePurger {
    /// Starts a thread that purges `ledger` every `interval` (of real time;
    /// "expired" is judged by `clock`).
    pub fn spawn(
        ledger: Arc<NonceLedger>,
        clock: Arc<dyn Clock>,
        sink: Arc<dyn TelemetrySink>,
        interval: Duration,
    ) -> Result<NoncePurger, PurgerError> {
        if interval.is_zero() {
            return Err(PurgerError::ZeroInterval);
        }
        let (tx, rx) = mpsc::channel::<Message>();
        let (done_tx, done) = mpsc::sync_channel::<()>(1);
        let runs = Arc::new(Runs::default());
        let thread_runs = Arc::clone(&runs);
        let thread = std::thread::Builder::new()
            .name("kasmina-nonce-purger".to_owned())
            .spawn(move || {
                let _exit = ExitSignal(done_tx);
                let mut next = Instant::now() + interval;
                loop {
                    let wait = next.saturating_duration_since(Instant::now());
                    let (trigger, reply) = match rx.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => {
                            next = Instant::now() + interval;
                            ("timer", None)
                        }
                        Ok(Message::Tick(reply)) => ("tick", Some(reply)),
                        Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                    };
                    let purged = purge_once(&ledger, clock.as_ref(), sink.as_ref(), trigger);
                    *thread_runs.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                    thread_runs.changed.notify_all();
                    if let Some(reply) = reply {
                        // The asker may have given up; nothing to do then.
                        let _ = reply.send(purged);
                    }
                }
            })
            .map_err(PurgerError::Spawn)?;
        Ok(NoncePurger { tx, done, thread: Some(thread), runs })
    }

    /// Purges now on the purger thread and returns how many entries it
    /// removed, once it has.
    pub fn tick(&self) -> Result<usize, PurgerError> {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        self.tx.send(Message::Tick(reply_tx)).map_err(|_| PurgerError::Stopped)?;
        reply_rx.recv().map_err(|_| PurgerError::Stopped)
    }

    /// Purge runs completed so far (timer and ticks).
    pub fn runs(&self) -> u64 {
        *self.runs.count.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until at least `n` runs have completed or `timeout` passes;
    /// returns whether they did. Wakes on each run, not by polling.
    pub fn wait_for_runs(&self, n: u64, timeout: Duration) -> bool {
        let guard = self.runs.count.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = self
            .runs
            .changed
            .wait_timeout_while(guard, timeout, |count| *count < n)
            .unwrap_or_else(PoisonError::into_inner);
        *guard >= n
    }

    /// Stops the thread and waits at most `timeout` for it to exit.
    pub fn stop(mut self, timeout: Duration) -> Result<(), PurgerError> {
        // A send error means the thread already exited; the exit signal says so.
        let _ = self.tx.send(Message::Stop);
        match self.done.recv_timeout(timeout) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if let Some(thread) = self.thread.take() {
                    // It has signalled exit, so this join returns at once.
                    let _ = thread.join();
                }
                Ok(())
            }
            Err(RecvTimeoutError::Timeout) => {
                // Detach: a stuck purger must not hang shutdown.
                self.thread.take();
                Err(PurgerError::StopTimeout(timeout))
            }
        }
    }
}

impl Drop for NoncePurger {
    fn drop(&mut self) {
        let _ = self.tx.send(Message::Stop);
    }
}

fn purge_once(ledger: &NonceLedger, clock: &dyn Clock, sink: &dyn TelemetrySink, trigger: &'static str) -> usize {
    let _span = tracing::debug_span!("kasmina.security.purge", trigger).entered();
    let now = clock.now_ms();
    let purged = ledger.purge_expired(now);
    if purged > 0 {
        sink.emit(
            TelemetryEvent::new("kasmina.security.nonce_purged", TelemetryLevel::Info, "expired nonces purged", now)
                .attr("purged", purged as u64)
                .attr("remaining", ledger.len() as u64)
                .attr("trigger", trigger),
        );
    }
    purged
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use kasmina_core::{ManualClock, MemorySink};

    fn setup(interval: Duration) -> (Arc<NonceLedger>, Arc<ManualClock>, Arc<MemorySink>, NoncePurger) {
        let ledger = Arc::new(NonceLedger::new(1_000, 100));
        let clock = Arc::new(ManualClock::new(0));
        let sink = Arc::new(MemorySink::new(100));
        let purger = NoncePurger::spawn(ledger.clone(), clock.clone(), sink.clone(), interval).expect("spawn");
        (ledger, clock, sink, purger)
    }

    #[test]
    fn tick_purges_without_any_new_insert() {
        let (ledger, clock, sink, purger) = setup(Duration::from_secs(3_600));
        for i in 0..5 {
            ledger.check_and_insert(&format!("n{i}"), 0).expect("fresh");
        }
        assert_eq!(purger.tick().expect("running"), 0, "nothing expired yet");
        clock.advance_ms(1_000);
        assert_eq!(purger.tick().expect("running"), 5);
        assert!(ledger.is_empty());
        let events = sink.named("kasmina.security.nonce_purged");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].attributes.get("trigger").map(ToString::to_string).as_deref(), Some("tick"));
        purger.stop(Duration::from_secs(2)).expect("stops");
    }

    #[test]
    fn timer_purges_on_its_own() {
        let (ledger, clock, sink, purger) = setup(Duration::from_millis(5));
        ledger.check_and_insert("old", 0).expect("fresh");
        clock.advance_ms(5_000);
        // A run already in flight may have read the old time: wait for the next one too.
        let seen = purger.runs();
        assert!(purger.wait_for_runs(seen + 2, Duration::from_secs(10)), "timer never fired");
        assert!(ledger.is_empty());
        assert!(
            sink.named("kasmina.security.nonce_purged")
                .iter()
                .any(|e| { e.attributes.get("trigger").map(ToString::to_string).as_deref() == Some("timer") })
        );
        purger.stop(Duration::from_secs(2)).expect("stops");
    }

    #[test]
    fn stop_is_bounded_and_zero_interval_is_refused() {
        let (_, _, _, purger) = setup(Duration::from_secs(3_600));
        let started = Instant::now();
        purger.stop(Duration::from_secs(2)).expect("stops");
        assert!(started.elapsed() < Duration::from_secs(2));

        assert!(matches!(
            NoncePurger::spawn(
                Arc::new(NonceLedger::new(1, 1)),
                Arc::new(ManualClock::new(0)),
                Arc::new(MemorySink::new(1)),
                Duration::ZERO
            ),
            Err(PurgerError::ZeroInterval)
        ));
    }
}
