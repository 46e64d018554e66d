//! Decisions on their way to the recorder (the daemon's journal), written
//! outside the state lock.
//!
//! Transitions, gate verdicts and state replacements are queued while the
//! state lock is held — so the queue's order is the order they were applied
//! in — and written when the lock is released ([`StateGuard`]'s drop). The
//! writer lock keeps that order across threads: whoever drains the queue
//! writes what it drained before anyone else drains again, so a caller that
//! finds the queue empty after taking the writer lock knows its decisions
//! are written. A slow disk then stalls the writer, not `status`,
//! `seed_states` or another seed's command.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError, RwLockWriteGuard};

use leyline::SeedStage;

use super::{DecisionRecorder, SeedManager, State};
use crate::gates::GateDecision;
use crate::telemetry::{HeldEvents, held::Holding};

/// One decision for the recorder.
#[derive(Debug)]
pub(super) enum Decision {
    Transition { seed_id: String, from: SeedStage, to: SeedStage, step: Option<u64>, reason: String },
    Gate { seed_id: String, decision: Box<GateDecision> },
    StateReplaced { why: String },
}

/// The queue and the writer's turn.
#[derive(Default)]
pub(super) struct DecisionQueue {
    pending: Mutex<Vec<Decision>>,
    writer: Mutex<()>,
}

impl DecisionQueue {
    /// Queues `decision` (called with the state lock held).
    pub(super) fn push(&self, decision: Decision) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).push(decision);
    }

    /// Writes everything queued, in order (called without the state lock).
    pub(super) fn flush(&self, recorder: &Arc<dyn DecisionRecorder>) {
        let _turn = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let drained = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        for decision in drained {
            match decision {
                Decision::Transition { seed_id, from, to, step, reason } => {
                    recorder.transition(&seed_id, from, to, step, &reason);
                }
                Decision::Gate { seed_id, decision } => recorder.gate(&seed_id, &decision),
                Decision::StateReplaced { why } => recorder.state_replaced(&why),
            }
        }
    }
}

/// The state lock for a call that may change state: on release, the
/// telemetry events emitted meanwhile are delivered and the decisions it
/// queued are written (see the module docs and [`HeldEvents`]).
pub(super) struct StateGuard<'a> {
    guard: Option<RwLockWriteGuard<'a, State>>,
    holding: Option<Holding>,
    manager: &'a SeedManager,
}

impl<'a> StateGuard<'a> {
    pub(super) fn new(guard: RwLockWriteGuard<'a, State>, manager: &'a SeedManager) -> Self {
        StateGuard { guard: Some(guard), holding: Some(HeldEvents::hold()), manager }
    }
}

impl Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        // Some until drop.
        self.guard.as_deref().unwrap_or_else(|| unreachable!("state guard used after release"))
    }
}

impl DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.guard.as_deref_mut().unwrap_or_else(|| unreachable!("state guard used after release"))
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        drop(self.holding.take());
        // Events before decisions: a slow disk delays the journal, not
        // telemetry (both were emitted in the order applied).
        self.manager.sink.release();
        self.manager.flush_decisions();
    }
}
