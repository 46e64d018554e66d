//! Where plugin instances get their memory: wasmtime's pooling allocator by
//! default, or a fresh mapping per instance.
//!
//! Why pooling: with `per-call` isolation every evaluation instantiates the
//! plugin afresh. On demand, that maps a 4 GiB linear-memory reservation,
//! faults the touched pages in and unmaps it all again — measured at about
//! two thirds of a fresh-store call. The pool reserves its slots once per
//! engine and recycles them: a freed slot is reset to the module's initial
//! image before reuse (wasmtime resets only the pages the previous instance
//! dirtied where the kernel offers `PAGEMAP_SCAN`, Linux ≥ 6.7), so no state
//! carries from one decision to the next, exactly as with a fresh mapping.
//! Memory caps are unchanged: the per-plugin limiter still refuses growth
//! beyond `PluginLimits::memory_bytes` inside the slot.

use wasmtime::{Config, Enabled, InstanceAllocationStrategy, PoolConcurrencyLimitError, PoolingAllocationConfig};

use crate::error::PluginError;

/// Default number of plugin instances alive at once per runtime: every
/// `reuse` plugin holds one, every in-flight `per-call` evaluation one more.
/// A host serves three plugins and evaluates from a handful of threads, so
/// 128 leaves ample headroom. Each slot reserves ~4 GiB of *address space*
/// (no memory) so bounds checks stay free; 128 slots is ~0.5 TiB of the
/// 128 TiB a 64-bit Linux process has.
pub const DEFAULT_POOLED_INSTANCES: u32 = 128;

/// A plugin component holds a main module, a shim and a fixup module; a
/// component needing more than this is refused at load (it could otherwise
/// drain the pool for everyone else).
const CORE_INSTANCES_PER_PLUGIN: u32 = 8;
/// Tables per plugin instance (a Rust component uses two).
const TABLES_PER_PLUGIN: u32 = 4;
/// Bytes of a recycled slot that are reset with `memset` (dirty pages only)
/// instead of being handed back to the kernel, so the next instance takes no
/// page faults. A policy plugin dirties well under this per call.
const KEEP_RESIDENT_BYTES: usize = 4 << 20;
/// Table bytes kept resident the same way.
const TABLE_KEEP_RESIDENT_BYTES: usize = 64 << 10;
/// Recycled slots kept warm beyond those in use; bounds the resident memory
/// an idle host keeps (at most this × `KEEP_RESIDENT_BYTES`).
const MAX_UNUSED_WARM_SLOTS: u32 = 16;

/// How the runtime allocates plugin instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceAllocation {
    /// Slots reserved once and recycled (the default). At most `instances`
    /// plugin instances may be alive at once; one more fails closed with
    /// `plugin_oom` and a detail naming the pool.
    Pooled {
        /// Most plugin instances alive at once (> 0).
        instances: u32,
    },
    /// Every instance maps (and unmaps) its own memory: no concurrency cap,
    /// but ~2–3× slower fresh-store evaluations.
    OnDemand,
}

impl Default for InstanceAllocation {
    fn default() -> Self {
        InstanceAllocation::Pooled { instances: DEFAULT_POOLED_INSTANCES }
    }
}

/// Applies `allocation` to the engine configuration.
pub(crate) fn configure(wasm: &mut Config, allocation: InstanceAllocation) -> Result<(), PluginError> {
    let instances = match allocation {
        InstanceAllocation::OnDemand => {
            wasm.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            return Ok(());
        }
        InstanceAllocation::Pooled { instances: 0 } => {
            return Err(PluginError::Engine("the instance pool needs at least one instance".into()));
        }
        InstanceAllocation::Pooled { instances } => instances,
    };
    let scale = |per: u32| {
        instances
            .checked_mul(per)
            .ok_or_else(|| PluginError::Engine(format!("instance pool of {instances} is too large")))
    };
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        .total_core_instances(scale(CORE_INSTANCES_PER_PLUGIN)?)
        .max_core_instances_per_component(CORE_INSTANCES_PER_PLUGIN)
        // One memory per plugin keeps "`instances` plugins always fit" true.
        .total_memories(instances)
        .max_memories_per_component(1)
        .total_tables(scale(TABLES_PER_PLUGIN)?)
        .max_tables_per_component(TABLES_PER_PLUGIN)
        .max_tables_per_module(2)
        .max_unused_warm_slots(MAX_UNUSED_WARM_SLOTS);
    // Without PAGEMAP_SCAN, keeping pages resident means memsetting the
    // whole region on every reset (measured slower than the kernel's
    // madvise), so keep nothing resident there.
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(TABLE_KEEP_RESIDENT_BYTES);
    }
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(())
}

/// Whether `error` is the pool running out of slots (a host capacity limit,
/// not something the plugin did).
pub(crate) fn is_exhausted(error: &wasmtime::Error) -> bool {
    error.chain().any(|e| e.downcast_ref::<PoolConcurrencyLimitError>().is_some())
}
