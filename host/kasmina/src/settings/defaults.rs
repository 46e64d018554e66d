//! Every default from SPEC.md as a named constant. The settings structs use
//! these and nothing else, so a default is changed in exactly one place.

/// Embargo after a cull before the slot may reset (SPEC.md §2).
pub const EMBARGO_S: u64 = 30;
/// Nonce ledger TTL: a command id is a replay within this window (SPEC.md §3).
pub const NONCE_TTL_S: u64 = 300;
/// Nonce ledger capacity; beyond it the earliest-expiring entry is evicted.
pub const NONCE_CAPACITY: usize = 10_000;
/// How often the ledger is purged by its timer, not only on insert.
pub const NONCE_PURGE_INTERVAL_S: u64 = 10;
/// Commands older than this are stale (SPEC.md §3).
pub const FRESHNESS_WINDOW_S: u64 = 60;
/// Commands issued further than this in the future are refused.
pub const FUTURE_SKEW_S: u64 = 5;
/// Environment variable holding the HMAC key (hex) when no key file is set.
pub const HMAC_KEY_ENV: &str = "KASMINA_HMAC_KEY";
/// Maximum α-vector length (SPEC.md §4).
pub const ALPHA_VEC_CAP: u32 = 64;
/// Maximum number of mesh layers in one annotation (SPEC.md §4).
pub const MESH_LAYERS_CAP: u32 = 128;
/// Maximum total bytes of all annotation keys and values of one command.
/// 16 KiB fits 128 layer names of 100 bytes plus a 64-float vector with room.
pub const ANNOTATION_BYTES_CAP: u32 = 16 * 1024;
/// Kernel latency budget per forward call (gate G2).
pub const KERNEL_LATENCY_BUDGET_US: u64 = 5_000;
/// Loss variance over the stability window above which G2 fails.
pub const LOSS_VARIANCE_THRESHOLD: f64 = 1.0;
/// Number of recent losses G2 looks at.
pub const LOSS_WINDOW: usize = 16;
/// Allowed regression of the global metric at G4 (absolute, e.g. accuracy).
pub const METRIC_TOLERANCE: f64 = 0.02;
/// Cosine similarity between host and seed gradients counted as a violation.
pub const ISOLATION_COSINE_THRESHOLD: f64 = 0.1;
/// Coordinates sampled per parameter by the isolation monitor.
pub const ISOLATION_SAMPLES_PER_PARAM: usize = 256;
/// Most coordinates sampled per parameter: the monitor's memory is O(k), and
/// beyond this sampling costs more than comparing whole gradients.
pub const ISOLATION_SAMPLES_PER_PARAM_MAX: usize = 65_536;
/// Violations within the window that open the isolation breaker.
pub const ISOLATION_VIOLATIONS_TO_TRIP: u32 = 3;
/// Window (steps) over which isolation violations are counted.
pub const ISOLATION_WINDOW_STEPS: u64 = 100;
/// Kernel cache: maximum entries.
pub const CACHE_MAX_ENTRIES: u64 = 128;
/// Kernel cache: maximum total artifact bytes (1 GiB).
pub const CACHE_MAX_BYTES: u64 = 1 << 30;
/// Kernel cache: time to live of an entry.
pub const CACHE_TTL_S: u64 = 3_600;
/// A prefetch not completed within this is stale.
pub const PREFETCH_TIMEOUT_MS: u64 = 30_000;
/// Background loops must stop within this after shutdown is signalled.
pub const SHUTDOWN_TIMEOUT_MS: u64 = 2_000;
/// `kernels.prewarm_memory_bytes`: 1 GiB per probe forward pass (a seed
/// kernel's probe batch of 2 needs a few MiB at most).
pub const PREWARM_MEMORY_BYTES: u64 = 1 << 30;
/// Plugin call deadline (epoch interruption).
pub const PLUGIN_DEADLINE_MS: u64 = 10;
/// Plugin linear-memory cap.
pub const PLUGIN_MEMORY_BYTES: u64 = 16 << 20;
/// Plugin fuel budget per call (0 disables fuel; epochs still bound time).
pub const PLUGIN_FUEL: u64 = 0;
/// Plugin instance isolation: a fresh store per evaluation.
pub const PLUGIN_ISOLATION: &str = "per-call";
/// Per-call deadline of the shadow gate candidate, ms (off the step path).
pub const SHADOW_DEADLINE_MS: u64 = 100;
/// Shadow evaluations that may wait for the candidate.
pub const SHADOW_QUEUE: usize = 64;
/// Rollback readiness: fast path SLA (SPEC.md §8).
pub const ROLLBACK_FAST_SLA_MS: u64 = 500;
/// Rollback readiness: full path SLA (SPEC.md §8).
pub const ROLLBACK_FULL_SLA_MS: u64 = 12_000;
/// Consecutive failures that open a circuit breaker.
pub const BREAKER_FAILURE_THRESHOLD: u32 = 5;
/// How long an open breaker refuses calls before probing.
pub const BREAKER_COOLDOWN_MS: u64 = 30_000;
/// Successful probes in HALF_OPEN needed to close again.
pub const BREAKER_HALF_OPEN_SUCCESSES: u32 = 2;
/// Per-step telemetry queue capacity (CRITICAL events bypass it).
pub const TELEMETRY_QUEUE_CAPACITY: usize = 4_096;
/// Priority channel capacity for CRITICAL events.
pub const TELEMETRY_CRITICAL_CAPACITY: usize = 1_024;
/// Knowledge distillation: weight of the KD loss against the task loss.
pub const KD_WEIGHT: f64 = 0.3;
/// Knowledge distillation: softmax temperature.
pub const KD_TEMPERATURE: f64 = 2.0;
/// Knowledge distillation: teacher memory budget (256 MiB).
pub const KD_TEACHER_MEMORY_BYTES: u64 = 256 << 20;
/// Steps a germinated seed may wait for the trainer to confirm its kernel
/// is attached before G1 is asked anyway (and fails it).
pub const ATTACH_TIMEOUT_STEPS: u64 = 10;
/// Steps a seed trains in isolation before G2 is asked.
pub const TRAINING_STEPS: u64 = 50;
/// Steps of the α ramp during BLENDING.
pub const BLEND_STEPS: u64 = 50;
/// Temperature of the sigmoid α ramp.
pub const BLEND_TEMPERATURE: f64 = 0.1;
/// Steps of the shadow window before G4 is asked.
pub const SHADOW_STEPS: u64 = 20;
/// Steps of probation before FOSSILIZE is accepted.
pub const PROBATION_STEPS: u64 = 20;
/// `kasmina serve`: time a client has from a frame's first byte to its last
/// before the connection is closed (a stalled or trickling sender).
pub const FRAME_TIMEOUT_MS: u64 = 10_000;
/// Smallest accepted `daemon.frame_timeout_ms`: a frame of the largest size
/// must be able to cross a loaded local socket.
pub const FRAME_TIMEOUT_MS_MIN: u64 = 100;
/// Largest accepted `daemon.frame_timeout_ms` (5 minutes).
pub const FRAME_TIMEOUT_MS_MAX: u64 = 300_000;
/// `kasmina serve`: silence between frames after which a connection that is
/// not subscribed to telemetry is closed as half-open (30 minutes: a trainer
/// may evaluate for minutes between step reports).
pub const IDLE_TIMEOUT_S: u64 = 1_800;
/// Smallest accepted `daemon.idle_timeout_s`.
pub const IDLE_TIMEOUT_S_MIN: u64 = 1;
/// Largest accepted `daemon.idle_timeout_s` (one day).
pub const IDLE_TIMEOUT_S_MAX: u64 = 86_400;
/// Largest settings file accepted.
pub const SETTINGS_FILE_BYTES_CAP: u64 = 1 << 20;
