//! Golden blend vectors: the Rust tensor plane's outputs, gradients and
//! blend statistics for fixed inputs, in every stage that computes
//! (incubator, the four blend modes while BLENDING, α = 1 while SHADOWING,
//! FOSSILIZED) plus a rank-3 CHANNEL case through the bare kernel.
//!
//! Written by `cargo run -p kasmina-tensor --example golden_blends` to
//! `bindings/python/tests/fixtures/golden_blends.json`, which the Python
//! grafter's parity test (`bindings/python/tests/test_blend_parity.py`)
//! must match to 1e-6; `host/tensor/tests/golden_blends.rs` fails when the
//! committed file no longer matches these kernels. Shared by both through
//! `#[path]`, so there is one generator.
//!
//! Each case runs a `SeedSlot` holding a linear seed `s = h·Wᵀ + b`
//! (`NativeKernel`) on a host output `h` [5, 4] that requires grad, in
//! training mode, then backpropagates `loss = Σ out ⊙ r`. A gradient that
//! does not exist (the host branch is detached before fossilization) is
//! written as `null`.

use std::fmt::Write as _;

use kasmina_tensor::blend::kernels::blend;
use kasmina_tensor::{BlendSpec, ConfidenceGate, ForwardCtx, NativeKernel, SeedSlot};
use leyline::SeedStage;
use tch::nn;
use tch::{Device, Kind, Tensor};

/// Where the fixture lives, relative to the repository root.
pub const FIXTURE: &str = "bindings/python/tests/fixtures/golden_blends.json";

const N: i64 = 5;
const C: i64 = 4;
const CLASSES: i64 = 3;

/// Deterministic values without an RNG: `sin(i·step + phase)` as f32.
fn wave(n: usize, step: f64, phase: f64, scale: f64) -> Vec<f32> {
    (0..n).map(|i| ((i as f64 * step + phase).sin() * scale) as f32).collect()
}

fn values(t: &Tensor) -> Vec<f32> {
    let flat = t.detach().to_kind(Kind::Float).reshape([-1]);
    Vec::<f32>::try_from(&flat).unwrap_or_default()
}

fn list(v: &[f32]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{:?}", f64::from(*x))).collect();
    format!("[{}]", parts.join(", "))
}

fn grad(t: &Tensor) -> String {
    let g = t.grad();
    if g.defined() { list(&values(&g)) } else { "null".to_owned() }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "null".to_owned(), |x| format!("{x:?}"))
}

struct Case {
    name: &'static str,
    stage: SeedStage,
    mode: &'static str,
    alpha: f64,
    spec: BlendSpec,
    alpha_vec: Vec<f32>,
    gate: (f64, f64, f64, f64),
    logits: bool,
}

fn cases() -> Vec<Case> {
    let plain = |name, stage, mode, alpha, spec| Case {
        name,
        stage,
        mode,
        alpha,
        spec,
        alpha_vec: Vec::new(),
        gate: (0.0, 0.0, 0.0, 1.0),
        logits: false,
    };
    let alpha_vec = vec![1.0, 0.5, 0.0, 0.25];
    let gate = ConfidenceGate { k: 4.0, tau: 0.5, alpha_lo: 0.1, alpha_hi: 0.9 };
    let confidence = || BlendSpec::confidence(gate).unwrap_or_else(|e| panic!("confidence spec: {e}"));
    let channel = || BlendSpec::channel(vec![1.0, 0.5, 0.0, 0.25]).unwrap_or_else(|e| panic!("channel spec: {e}"));
    vec![
        plain("incubator", SeedStage::Training, "CONVEX", 0.0, BlendSpec::convex()),
        plain("convex_blending", SeedStage::Blending, "CONVEX", 0.3, BlendSpec::convex()),
        plain("residual_blending", SeedStage::Blending, "RESIDUAL", 0.7, BlendSpec::residual()),
        Case {
            alpha_vec: alpha_vec.clone(),
            ..plain("channel_blending", SeedStage::Blending, "CHANNEL", 0.6, channel())
        },
        Case {
            gate: (4.0, 0.5, 0.1, 0.9),
            logits: true,
            ..plain("confidence_blending", SeedStage::Blending, "CONFIDENCE", 0.8, confidence())
        },
        plain("convex_shadowing", SeedStage::Shadowing, "CONVEX", 1.0, BlendSpec::convex()),
        plain("residual_fossilized", SeedStage::Fossilized, "RESIDUAL", 1.0, BlendSpec::residual()),
        Case {
            gate: (4.0, 0.5, 0.1, 0.9),
            logits: true,
            ..plain("confidence_fossilized", SeedStage::Fossilized, "CONFIDENCE", 1.0, confidence())
        },
    ]
}

/// The stages a slot walks to reach `stage`.
fn path_to(stage: SeedStage) -> &'static [SeedStage] {
    use SeedStage::*;
    const PATH: [SeedStage; 5] = [Training, Blending, Shadowing, Probationary, Fossilized];
    let end = PATH.iter().position(|s| *s == stage).unwrap_or_else(|| panic!("no path to {stage:?}"));
    &PATH[..=end]
}

fn run_case(case: &Case, w: &[f32], b: &[f32], h0: &[f32], r: &[f32], logits: &[f32]) -> String {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut linear = nn::linear(vs.root() / "fc", C, C, Default::default());
    tch::no_grad(|| {
        linear.ws.copy_(&Tensor::from_slice(w).view([C, C]));
        if let Some(bs) = linear.bs.as_mut() {
            bs.copy_(&Tensor::from_slice(b));
        }
    });
    let (ws, bs) = (linear.ws.shallow_clone(), linear.bs.as_ref().map(Tensor::shallow_clone));
    let kernel = NativeKernel::new(vs, linear).unwrap_or_else(|e| panic!("kernel: {e}"));
    let mut slot = SeedSlot::new("seed", "site", case.spec.clone()).unwrap_or_else(|e| panic!("slot: {e}"));
    let step = |slot: &mut SeedSlot, to| slot.transition(to).unwrap_or_else(|e| panic!("{} -> {to:?}: {e}", case.name));
    step(&mut slot, SeedStage::Germinated);
    slot.attach_kernel(Box::new(kernel)).unwrap_or_else(|e| panic!("attach: {e}"));
    for to in path_to(case.stage) {
        step(&mut slot, *to);
        if *to == SeedStage::Blending {
            slot.set_alpha(case.alpha).unwrap_or_else(|e| panic!("alpha: {e}"));
        }
    }
    let h = Tensor::from_slice(h0).view([N, C]).set_requires_grad(true);
    let lg = Tensor::from_slice(logits).view([N, CLASSES]);
    let ctx = if case.logits { ForwardCtx::train().with_logits(&lg) } else { ForwardCtx::train() };
    let out = slot.forward(&h, &ctx).unwrap_or_else(|e| panic!("{}: forward: {e}", case.name));
    (&out.out * Tensor::from_slice(r).view([N, C])).sum(Kind::Float).backward();
    let mut s = String::new();
    let _ = writeln!(s, "    {{");
    let _ = writeln!(s, "      \"name\": \"{}\",", case.name);
    let _ = writeln!(s, "      \"stage\": \"{}\",", case.stage.as_str());
    let _ = writeln!(s, "      \"mode\": \"{}\",", case.mode);
    let _ = writeln!(s, "      \"alpha\": {:?},", case.alpha);
    let _ = writeln!(s, "      \"alpha_vec\": {},", list(&case.alpha_vec));
    let (k, tau, lo, hi) = case.gate;
    let _ =
        writeln!(s, "      \"gate\": {{\"k\": {k:?}, \"tau\": {tau:?}, \"alpha_lo\": {lo:?}, \"alpha_hi\": {hi:?}}},");
    let _ = writeln!(s, "      \"uses_logits\": {},", case.logits);
    let _ = writeln!(s, "      \"out\": {},", list(&values(&out.out)));
    let _ = writeln!(s, "      \"grad_host\": {},", grad(&h));
    let _ = writeln!(s, "      \"grad_weight\": {},", grad(&ws));
    let _ = writeln!(s, "      \"grad_bias\": {},", bs.as_ref().map_or_else(|| "null".to_owned(), grad));
    match &out.stats {
        Some(st) => {
            let _ = writeln!(
                s,
                "      \"stats\": {{\"alpha_mean\": {:?}, \"alpha_p95\": {:?}, \"clamped_fraction\": {:?}, \"sparsity\": {}, \"gate_mean\": {}}}",
                st.alpha_mean,
                st.alpha_p95,
                st.clamped_fraction,
                opt(st.sparsity),
                opt(st.gate_mean)
            );
        }
        None => {
            let _ = writeln!(s, "      \"stats\": null");
        }
    }
    let _ = write!(s, "    }}");
    s
}

/// CHANNEL over rank-3 features [N, C, L] through the bare kernel (no slot).
fn channel_rank3() -> String {
    let (n, c, l) = (3i64, 4i64, 2i64);
    let numel = (n * c * l) as usize;
    let host = wave(numel, 0.41, 0.3, 1.5);
    let seed = wave(numel, 0.23, 1.1, 2.0);
    let spec = BlendSpec::channel(vec![1.0, 0.5, 0.0, 0.25]).unwrap_or_else(|e| panic!("spec: {e}"));
    let (ht, st) = (Tensor::from_slice(&host).view([n, c, l]), Tensor::from_slice(&seed).view([n, c, l]));
    let (out, stats) = blend(&spec, 0.6, &ht, &st, None).unwrap_or_else(|e| panic!("blend: {e}"));
    let mut s = String::new();
    let _ = writeln!(s, "  \"channel_rank3\": {{");
    let _ = writeln!(s, "    \"shape\": [{n}, {c}, {l}],");
    let _ = writeln!(s, "    \"alpha\": 0.6,");
    let _ = writeln!(s, "    \"alpha_vec\": {},", list(&[1.0, 0.5, 0.0, 0.25]));
    let _ = writeln!(s, "    \"host\": {},", list(&host));
    let _ = writeln!(s, "    \"seed\": {},", list(&seed));
    let _ = writeln!(s, "    \"out\": {},", list(&values(&out)));
    let _ = writeln!(s, "    \"sparsity\": {}", opt(stats.sparsity));
    let _ = write!(s, "  }}");
    s
}

/// The whole fixture, as JSON text.
pub fn generate() -> String {
    tch::set_num_threads(1);
    let w = wave((C * C) as usize, 0.7, 0.2, 0.5);
    let b = wave(C as usize, 1.3, 0.5, 0.1);
    let h = wave((N * C) as usize, 0.37, 0.1, 1.0);
    let r = wave((N * C) as usize, 0.53, 0.9, 1.0);
    // Margins spread around τ = 0.5 so the gate clamps some samples at each bound.
    let logits: Vec<f32> = vec![2.0, 0.1, -1.0, 0.3, 0.2, 0.1, -0.5, 1.2, 0.4, 0.0, 0.0, 3.5, 1.0, 0.7, -2.0];
    let mut s = String::new();
    let _ = writeln!(s, "{{");
    let _ = writeln!(s, "  \"generator\": \"cargo run -p kasmina-tensor --example golden_blends\",");
    let _ = writeln!(s, "  \"n\": {N}, \"c\": {C}, \"classes\": {CLASSES},");
    let _ = writeln!(s, "  \"weight\": {},", list(&w));
    let _ = writeln!(s, "  \"bias\": {},", list(&b));
    let _ = writeln!(s, "  \"host\": {},", list(&h));
    let _ = writeln!(s, "  \"upstream\": {},", list(&r));
    let _ = writeln!(s, "  \"logits\": {},", list(&logits));
    let _ = writeln!(s, "  \"cases\": [");
    let rendered: Vec<String> = cases().iter().map(|c| run_case(c, &w, &b, &h, &r, &logits)).collect();
    let _ = writeln!(s, "{}", rendered.join(",\n"));
    let _ = writeln!(s, "  ],");
    let _ = writeln!(s, "{}", channel_rank3());
    let _ = writeln!(s, "}}");
    s
}

/// Compares two fixture texts: identical apart from numbers, and numbers
/// within `tol` (absolute). Returns the first difference.
pub fn compare(expected: &str, actual: &str, tol: f64) -> Result<(), String> {
    let split = |t: &str| -> Vec<String> {
        t.split(|c: char| c.is_whitespace() || matches!(c, ',' | ':' | '[' | ']' | '{' | '}'))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let (e, a) = (split(expected), split(actual));
    if e.len() != a.len() {
        return Err(format!("{} tokens expected, {} generated", e.len(), a.len()));
    }
    for (i, (x, y)) in e.iter().zip(&a).enumerate() {
        match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(p), Ok(q)) if (p - q).abs() <= tol => {}
            (Ok(p), Ok(q)) => return Err(format!("token {i}: {p} expected, {q} generated")),
            _ if x == y => {}
            _ => return Err(format!("token {i}: {x:?} expected, {y:?} generated")),
        }
    }
    Ok(())
}
