//! Gradient isolation monitor (SPEC.md §6).
//!
//! # What is compared
//! Host and seed gradients live on different parameters, so a cosine between
//! them needs a common coordinate space. Ours is the **union of both
//! parameter sets, keyed by storage identity** ([`ParamId`]): for every
//! parameter `p` in the union, `k` coordinates are sampled once and the same
//! samples `g_p[idx]` enter the host vector if `p` is a host parameter and
//! the seed vector if `p` is a seed parameter (zeros elsewhere). Then
//!
//! `cos = Σ_{p ∈ host ∩ seed} ‖g_p[idx]‖² / √(Σ_{p ∈ host} ‖g_p[idx]‖² · Σ_{p ∈ seed} ‖g_p[idx]‖²)`
//!
//! — the share of gradient energy on coordinates both sides train. It is 0
//! for isolated graphs whatever their size, and approaches 1 as a shared
//! parameter dominates the gradient: normalised by both norms, so one
//! threshold serves every layer width (a raw dot product grows with it).
//! This is computed from the `.grad` tensors the trainer's backward already
//! produced — no extra backward pass — and the per-parameter squared norms
//! are the only values copied to the host (one sync per check).
//!
//! An undetached host input (the seed's graph reaching host parameters
//! through its *input*) does not put a host parameter in the seed's set, so
//! the cosine cannot see it. [`crate::SeedSlot`] prevents it structurally
//! (the seed is always fed `host.detach()`), and
//! [`IsolationMonitor::probe_input_leak`] detects it: one backward of the
//! seed output alone, asking which host parameters it reaches. The probe
//! costs a backward through the seed branch, so it runs at G1 and
//! periodically rather than every step; it counts into the same window and
//! breaker.
//!
//! # Sampling
//! `k` indices per parameter are drawn with replacement by
//! `Tensor::randint(numel, [k])` on the gradient's device and gathered with
//! `index_select` on a flat view: O(k) memory, never a permutation of numel.
//! Parameters with `numel ≤ k` are taken whole.
//!
//! # Verdicts
//! `cos > threshold` is a violation. Violations are counted per seed over a
//! window of training steps; `violations_to_trip` within the window opens
//! the seed's isolation breaker with a CRITICAL event. With `fail_fast` a
//! violation is also returned as [`TensorError::IsolationViolation`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use kasmina_core::{Clock, TelemetrySink};
use leyline::{BreakerState, TelemetryEvent, TelemetryLevel};
use tch::{Kind, Tensor};

use crate::error::{Result, TensorError};
use crate::registry::ParamId;

/// Largest `k` accepted (samples per parameter).
pub const MAX_SAMPLES_PER_PARAM: usize = 1 << 16;

/// Monitor thresholds (defaults live in kasmina's settings, SPEC.md §6).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IsolationConfig {
    /// Cosine above which a check is a violation, in (0, 1].
    pub cosine_threshold: f64,
    /// Coordinates sampled per parameter (`k`).
    pub samples_per_param: usize,
    /// Violations within the window that open the breaker.
    pub violations_to_trip: u32,
    /// Window length in training steps.
    pub window_steps: u64,
    /// Return an error on the first violation as well.
    pub fail_fast: bool,
}

impl IsolationConfig {
    fn validate(&self) -> Result<()> {
        let bad = |name, rule: &str| Err(TensorError::InvalidConfig { name, rule: rule.into() });
        if !(self.cosine_threshold > 0.0 && self.cosine_threshold <= 1.0) {
            return bad("isolation.cosine_threshold", "must be in (0, 1]");
        }
        if self.samples_per_param == 0 || self.samples_per_param > MAX_SAMPLES_PER_PARAM {
            return bad("isolation.samples_per_param", "must be in 1..=65536");
        }
        if self.violations_to_trip == 0 {
            return bad("isolation.violations_to_trip", "must be ≥ 1");
        }
        if self.window_steps == 0 {
            return bad("isolation.window_steps", "must be ≥ 1");
        }
        Ok(())
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct IsolationReport {
    /// The seed.
    pub seed_id: String,
    /// Training step.
    pub step: u64,
    /// Measured cosine (sampled check; 0 when either side had no gradient),
    /// `None` for the input-leak probe.
    pub cosine: Option<f64>,
    /// Parameters present in both sets (sampled check).
    pub shared_parameters: usize,
    /// Host parameters reached by the seed output's gradient (input-leak probe).
    pub leaked_parameters: usize,
    /// Whether this check was a violation.
    pub violation: bool,
    /// Violations inside the current window, this one included.
    pub violations_in_window: u32,
    /// The seed's isolation breaker after this check.
    pub breaker: BreakerState,
}

/// Per-seed counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeedIsolationStats {
    /// Checks run (both kinds).
    pub checks: u64,
    /// Violations ever counted.
    pub violations: u64,
    /// Largest cosine seen.
    pub max_cosine: f64,
    /// Last cosine.
    pub last_cosine: f64,
    /// Whether the breaker is open.
    pub breaker_open: bool,
    window: VecDeque<u64>,
}

/// The monitor: one per trainer, checks any number of seeds.
pub struct IsolationMonitor {
    config: IsolationConfig,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn TelemetrySink>,
    seeds: BTreeMap<String, SeedIsolationStats>,
}

impl std::fmt::Debug for IsolationMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsolationMonitor").field("config", &self.config).field("seeds", &self.seeds.len()).finish()
    }
}

impl IsolationMonitor {
    /// A monitor with validated thresholds.
    pub fn new(config: IsolationConfig, clock: Arc<dyn Clock>, sink: Arc<dyn TelemetrySink>) -> Result<Self> {
        config.validate()?;
        Ok(IsolationMonitor { config, clock, sink, seeds: BTreeMap::new() })
    }

    /// Stats of one seed.
    pub fn stats(&self, seed_id: &str) -> Option<&SeedIsolationStats> {
        self.seeds.get(seed_id)
    }

    /// The seed's isolation breaker state (CLOSED for unknown seeds).
    pub fn breaker(&self, seed_id: &str) -> BreakerState {
        match self.seeds.get(seed_id) {
            Some(s) if s.breaker_open => BreakerState::Open,
            _ => BreakerState::Closed,
        }
    }

    /// Violations outstanding in the seed's window (gates G1/G4/G5 read this).
    pub fn outstanding(&self, seed_id: &str) -> u32 {
        self.seeds.get(seed_id).map_or(0, |s| s.window.len() as u32)
    }

    /// Forgets a seed (cull/reset): closes its breaker, clears its window.
    pub fn forget(&mut self, seed_id: &str) -> bool {
        self.seeds.remove(seed_id).is_some()
    }

    /// The per-step check: sampled cosine after the trainer's backward at `step`.
    pub fn check(
        &mut self,
        seed_id: &str,
        step: u64,
        host_params: &[Tensor],
        seed_params: &[Tensor],
    ) -> Result<IsolationReport> {
        let (cosine, shared) = sampled_cosine(host_params, seed_params, self.config.samples_per_param)?;
        let violation = cosine > self.config.cosine_threshold;
        self.record(seed_id, step, Some(cosine), shared, 0, violation)
    }

    /// The input-leak probe: does the seed's output reach any host parameter
    /// through autograd? Call it after the seed's forward and **before** the
    /// trainer's backward (it keeps the graph). It runs one extra backward
    /// through the seed branch, so it is meant for gate G1 and periodic
    /// checks, not every step. Any host parameter with a non-zero gradient
    /// from the seed output is a violation (the seed's input was not
    /// detached, or the kernel computes through host parameters).
    pub fn probe_input_leak(
        &mut self,
        seed_id: &str,
        step: u64,
        seed_out: &Tensor,
        host_params: &[Tensor],
    ) -> Result<IsolationReport> {
        let leaked = leaked_parameters(seed_out, host_params, self.config.samples_per_param)?;
        self.record(seed_id, step, None, 0, leaked, leaked > 0)
    }

    fn record(
        &mut self,
        seed_id: &str,
        step: u64,
        cosine: Option<f64>,
        shared: usize,
        leaked: usize,
        violation: bool,
    ) -> Result<IsolationReport> {
        let trip = self.config.violations_to_trip as usize;
        let window_steps = self.config.window_steps;
        let entry = self.seeds.entry(seed_id.to_owned()).or_default();
        entry.checks += 1;
        if let Some(c) = cosine {
            entry.last_cosine = c;
            entry.max_cosine = entry.max_cosine.max(c);
        }
        while entry.window.front().is_some_and(|s| step.saturating_sub(*s) >= window_steps) {
            entry.window.pop_front();
        }
        let mut opened = false;
        if violation {
            entry.violations += 1;
            entry.window.push_back(step);
            if !entry.breaker_open && entry.window.len() >= trip {
                entry.breaker_open = true;
                opened = true;
            }
        }
        let report = IsolationReport {
            seed_id: seed_id.to_owned(),
            step,
            cosine,
            shared_parameters: shared,
            leaked_parameters: leaked,
            violation,
            violations_in_window: entry.window.len() as u32,
            breaker: if entry.breaker_open { BreakerState::Open } else { BreakerState::Closed },
        };
        if violation {
            self.emit(&report, TelemetryLevel::Warning, "kasmina.isolation.violation", "gradient isolation violated");
        }
        if opened {
            self.emit(&report, TelemetryLevel::Critical, "kasmina.isolation.breaker_open", "isolation breaker opened");
        }
        if violation && self.config.fail_fast {
            return Err(TensorError::IsolationViolation {
                seed_id: seed_id.to_owned(),
                cosine,
                leaked_parameters: leaked,
                threshold: self.config.cosine_threshold,
            });
        }
        Ok(report)
    }

    fn emit(&self, r: &IsolationReport, level: TelemetryLevel, name: &str, message: &str) {
        let mut event = TelemetryEvent::new(name, level, message, self.clock.now_ms())
            .seed(r.seed_id.as_str())
            .attr("step", r.step)
            .attr("threshold", self.config.cosine_threshold)
            .attr("shared_parameters", r.shared_parameters as u64)
            .attr("leaked_parameters", r.leaked_parameters as u64)
            .attr("violations_in_window", u64::from(r.violations_in_window))
            .attr("window_steps", self.config.window_steps);
        if let Some(c) = r.cosine {
            event = event.attr("cosine", c);
        }
        self.sink.emit(event);
    }
}

/// Host parameters whose gradient from `seed_out` (summed) is non-zero,
/// judged on `k` sampled coordinates each.
fn leaked_parameters(seed_out: &Tensor, host_params: &[Tensor], k: usize) -> Result<usize> {
    if !seed_out.requires_grad() {
        return Ok(0);
    }
    // Only parameters that can receive gradients can leak (libtorch refuses the others as inputs).
    let inputs: Vec<&Tensor> = host_params.iter().filter(|p| p.requires_grad()).collect();
    if inputs.is_empty() {
        return Ok(0);
    }
    let grads =
        Tensor::f_run_backward(&[seed_out], &inputs, true, false).map_err(TensorError::torch("isolation probe"))?;
    let mut leaked = 0;
    for g in grads.iter().filter(|g| g.defined()) {
        let sample = sample_flat(g, k)?;
        let norm = sample.f_abs().and_then(|a| a.f_max()).map_err(TensorError::torch("isolation probe"))?;
        if norm.f_double_value(&[]).map_err(TensorError::torch("isolation probe"))? > 0.0 {
            leaked += 1;
        }
    }
    Ok(leaked)
}

/// The identity-paired cosine described in the module docs, and the number
/// of shared parameters. Parameters without a gradient contribute nothing.
pub fn sampled_cosine(host_params: &[Tensor], seed_params: &[Tensor], k: usize) -> Result<(f64, usize)> {
    // Union keyed by identity: (host?, seed?) per parameter, in first-seen order.
    let mut roles: HashMap<ParamId, (bool, bool, usize)> = HashMap::new();
    let mut order: Vec<&Tensor> = Vec::new();
    for (is_seed, params) in [(false, host_params), (true, seed_params)] {
        for p in params {
            let id = ParamId::of(p)
                .map_err(|e| TensorError::InvalidConfig { name: "isolation parameter", rule: e.to_string() })?;
            let entry = roles.entry(id).or_insert_with(|| {
                order.push(p);
                (false, false, order.len() - 1)
            });
            if is_seed { entry.1 = true } else { entry.0 = true }
        }
    }
    let mut norms: Vec<Tensor> = Vec::with_capacity(order.len());
    let mut index_of: Vec<Option<usize>> = vec![None; order.len()];
    for (i, p) in order.iter().enumerate() {
        let g = p.grad();
        if !g.defined() {
            continue;
        }
        let sample = sample_flat(&g, k)?;
        let sq =
            sample.f_to_kind(Kind::Double).and_then(|s| s.f_dot(&s)).map_err(TensorError::torch("isolation norm"))?;
        index_of[i] = Some(norms.len());
        norms.push(sq);
    }
    if norms.is_empty() {
        return Ok((0.0, roles.values().filter(|(h, s, _)| *h && *s).count()));
    }
    let stacked = Tensor::f_stack(&norms, 0)
        .and_then(|t| t.f_to_device(tch::Device::Cpu))
        .map_err(TensorError::torch("isolation stack"))?;
    let values = Vec::<f64>::try_from(&stacked).map_err(TensorError::torch("isolation copy"))?;
    let (mut both, mut host, mut seed, mut shared) = (0.0, 0.0, 0.0, 0usize);
    for (is_host, is_seed, i) in roles.values() {
        if *is_host && *is_seed {
            shared += 1;
        }
        let Some(v) = index_of[*i].map(|j| values[j]) else { continue };
        if *is_host {
            host += v;
        }
        if *is_seed {
            seed += v;
        }
        if *is_host && *is_seed {
            both += v;
        }
    }
    if !(host.is_finite() && seed.is_finite()) {
        return Err(TensorError::NonFinite("sampled gradients"));
    }
    let denom = (host * seed).sqrt();
    // No gradient on one side: nothing can overlap.
    let cosine = if denom > 0.0 { both / denom } else { 0.0 };
    Ok((cosine, shared))
}

/// `k` coordinates of `g` drawn with replacement (or all of it when small).
fn sample_flat(g: &Tensor, k: usize) -> Result<Tensor> {
    let flat = g.f_reshape([-1]).map_err(TensorError::torch("isolation flatten"))?;
    let numel = flat.numel();
    if numel <= k {
        return Ok(flat);
    }
    let idx = Tensor::f_randint(numel as i64, [k as i64], (Kind::Int64, g.device()))
        .map_err(TensorError::torch("isolation sample"))?;
    flat.f_index_select(0, &idx).map_err(TensorError::torch("isolation gather"))
}
