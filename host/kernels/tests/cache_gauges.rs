//! Issue 16, "Lagging numbers": the cache gauge counts a kernel as soon as
//! it is loaded, and a TTL expiry is counted when the numbers are read,
//! not at the next lookup of that kernel. Real Urza files, real loads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use kasmina_kernels::fixtures::{MLP_ADAPTER, RESIDUAL_CONV};

#[test]
fn lagging_numbers_cache_entries_count_a_kernel_right_after_its_load() {
    let env = common::Env::new(100);
    let (mgr, _events) = env.default_manager();
    assert_eq!(mgr.cache_entries(), 0);
    mgr.get(MLP_ADAPTER, None).unwrap();
    assert_eq!(mgr.cache_entries(), 1, "read at once, with no maintenance run by the caller");
    mgr.get(RESIDUAL_CONV, None).unwrap();
    assert_eq!(mgr.cache_entries(), 2);
}

#[test]
fn lagging_numbers_ttl_expirations_are_counted_without_a_lookup() {
    let env = common::Env::new(100);
    let mut cfg = common::config();
    cfg.cache_ttl_ms = 5_000;
    let (mgr, _events) = env.manager(cfg);
    mgr.get(MLP_ADAPTER, None).unwrap();
    env.clock.advance_ms(5_000);
    // Nobody looks the kernel up again: reading the numbers is enough.
    assert_eq!(mgr.stats().cumulative.expirations, 1);
    assert_eq!(mgr.cache_entries(), 0);
    assert_eq!(mgr.stats().cumulative.expirations, 1, "counted once");
}
