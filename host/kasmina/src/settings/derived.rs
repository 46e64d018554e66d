//! The configuration each part of a host is built from, derived from the
//! settings in one place: the host's assembly (`crate::host`), the daemon
//! and the benches that copy that assembly all call these, so a new key
//! reaches every one of them.

use super::Settings;

impl Settings {
    /// The circuit breakers' thresholds (the kernel fetch breaker's).
    pub fn breaker_config(&self) -> kasmina_core::BreakerConfig {
        let b = &self.breaker;
        kasmina_core::BreakerConfig {
            failure_threshold: b.failure_threshold,
            cooldown_ms: b.cooldown_ms,
            half_open_successes: b.half_open_successes,
        }
    }

    /// The per-seed isolation breakers' window, with the breakers' recovery.
    pub fn isolation_config(&self) -> crate::isolation::IsolationConfig {
        crate::isolation::IsolationConfig {
            violations_to_trip: self.isolation.violations_to_trip,
            window_steps: self.isolation.window_steps,
            cooldown_ms: self.breaker.cooldown_ms,
            half_open_successes: self.breaker.half_open_successes,
        }
    }

    /// The kernel load manager's cache, prefetch and prewarm bounds, loading
    /// onto `device`.
    pub fn kernel_manager_config(&self, device: tch::Device) -> kasmina_kernels::KernelManagerConfig {
        let k = &self.kernels;
        kasmina_kernels::KernelManagerConfig {
            cache_max_entries: k.cache_max_entries,
            cache_max_bytes: k.cache_max_bytes,
            cache_ttl_ms: k.cache_ttl_s.saturating_mul(1_000),
            prefetch_timeout_ms: k.prefetch_timeout_ms,
            prefetch_max_in_flight: 256,
            shutdown_timeout_ms: k.shutdown_timeout_ms,
            prewarm_runs: 5,
            prewarm_memory_bytes: k.prewarm_memory_bytes,
            device,
        }
    }

    /// The part of these settings a trainer applies (isolation measurement,
    /// distillation), as the answer to its registration: one settings file
    /// rules both the host and every trainer beside it.
    pub fn trainer_settings(&self) -> leyline::api::TrainerSettings {
        let (i, k) = (&self.isolation, &self.distillation);
        leyline::api::TrainerSettings {
            contract_version: leyline::CONTRACT_VERSION,
            isolation: leyline::api::IsolationPolicy {
                cosine_threshold: i.cosine_threshold,
                // validate() caps it far below u32::MAX.
                samples_per_param: i.samples_per_param as u32,
                violations_to_trip: i.violations_to_trip,
                window_steps: i.window_steps,
                fail_fast: i.fail_fast,
            },
            distillation: leyline::api::DistillationPolicy {
                weight: k.weight,
                temperature: k.temperature,
                teacher_memory_bytes: k.teacher_memory_bytes,
            },
        }
    }
}
