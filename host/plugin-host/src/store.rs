//! Per-store state: the memory limiter that remembers refusals (so an
//! out-of-memory abort is reported as `plugin_oom`, not a generic trap), the
//! `log` host function with its caps, and failure classification.

use wasmtime::{ResourceLimiter, Trap};

use crate::bindings::wit_log::{self, Level};
use crate::error::{FailureKind, PluginFailure};
use crate::limits::{MAX_LOG_MESSAGE_BYTES, MAX_LOG_MESSAGES_PER_CALL};

/// Data held by every plugin store.
pub(crate) struct StoreState {
    limiter: MemoryLimiter,
    plugin: std::sync::Arc<str>,
    logs_this_call: u32,
    /// Messages dropped or truncated by the log caps (reported in traces).
    pub(crate) logs_suppressed: u32,
}

impl StoreState {
    pub(crate) fn new(plugin: std::sync::Arc<str>, memory_bytes: usize) -> Self {
        StoreState {
            limiter: MemoryLimiter { cap: memory_bytes, denied: None },
            plugin,
            logs_this_call: 0,
            logs_suppressed: 0,
        }
    }

    pub(crate) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limiter
    }

    /// Resets per-call bookkeeping before a call on a reused store.
    pub(crate) fn begin_call(&mut self) {
        self.logs_this_call = 0;
        self.limiter.denied = None;
    }

    /// Maps any error from instantiating or calling a plugin to a failure kind.
    /// Many failures are not `Trap` values, so anything unrecognised is a trap.
    pub(crate) fn classify(&self, error: &wasmtime::Error, deadline_ms: u128) -> PluginFailure {
        if crate::pool::is_exhausted(error) {
            // Host capacity, not plugin behaviour; still fails closed.
            return PluginFailure::new(
                FailureKind::Oom,
                format!("the host's plugin instance pool is exhausted ({})", error.root_cause()),
            );
        }
        if let Some(desired) = self.limiter.denied {
            return PluginFailure::new(
                FailureKind::Oom,
                format!("memory growth to {desired} bytes refused (cap {} bytes)", self.limiter.cap),
            );
        }
        match error.chain().find_map(|e| e.downcast_ref::<Trap>()) {
            Some(Trap::Interrupt) => {
                PluginFailure::new(FailureKind::Timeout, format!("deadline of {deadline_ms} ms exceeded"))
            }
            Some(Trap::OutOfFuel) => PluginFailure::new(FailureKind::Timeout, "fuel exhausted"),
            Some(trap) => PluginFailure::new(FailureKind::Trap, trap.to_string()),
            None => {
                // The root cause, without the wasm backtrace context: e.g. a
                // std panic reaching for `wasi:cli/environment`, which is a trap.
                let mut detail = error.root_cause().to_string();
                if detail.starts_with("unknown import") {
                    detail = format!("called a host function plugins are not given ({detail})");
                }
                PluginFailure::new(FailureKind::Trap, truncate(detail, MAX_FAILURE_DETAIL_BYTES))
            }
        }
    }
}

/// Failure details end up in verdict attributes; keep them short.
const MAX_FAILURE_DETAIL_BYTES: usize = 240;

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Caps linear memory and remembers the first refused growth.
struct MemoryLimiter {
    cap: usize,
    denied: Option<usize>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.denied.get_or_insert(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables hold function references; a policy plugin needs few.
        Ok(desired <= 10_000)
    }

    fn instances(&self) -> usize {
        // A component instantiates a handful of core instances.
        64
    }
}

impl wit_log::Host for StoreState {
    fn log(&mut self, level: Level, message: String) {
        self.logs_this_call = self.logs_this_call.saturating_add(1);
        if self.logs_this_call > MAX_LOG_MESSAGES_PER_CALL {
            self.logs_suppressed = self.logs_suppressed.saturating_add(1);
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_MESSAGE_BYTES {
            let mut end = MAX_LOG_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            self.logs_suppressed = self.logs_suppressed.saturating_add(1);
        }
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(target: "kasmina.plugin.log", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "kasmina.plugin.log", plugin, "{message}"),
            Level::Info => tracing::info!(target: "kasmina.plugin.log", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "kasmina.plugin.log", plugin, "{message}"),
            Level::Error => tracing::error!(target: "kasmina.plugin.log", plugin, "{message}"),
        }
    }
}

impl crate::bindings::wit_types::Host for StoreState {}

/// `log` of API 0.1.0: the same function, its level enum from the frozen WIT.
impl crate::bindings::v0_1::esper::kasmina::log::Host for StoreState {
    fn log(&mut self, level: crate::bindings::v0_1::esper::kasmina::log::Level, message: String) {
        use crate::bindings::v0_1::esper::kasmina::log::Level as V01;
        let level = match level {
            V01::Trace => Level::Trace,
            V01::Debug => Level::Debug,
            V01::Info => Level::Info,
            V01::Warn => Level::Warn,
            V01::Error => Level::Error,
        };
        wit_log::Host::log(self, level, message);
    }
}

impl crate::bindings::wit_types_v0_1::Host for StoreState {}
