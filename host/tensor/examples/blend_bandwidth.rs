//! Blend kernels against `copy_` of the same size, on any device: the
//! bandwidth figures `scripts/gpu-check.sh` gates on (every blend ≥ 0.8×
//! `copy_`).
//!
//!     cargo run -p kasmina-tensor --example blend_bandwidth -- --device cuda
//!     cargo run -p kasmina-tensor --example blend_bandwidth -- --device cpu --elements 4194304 --iters 5
//!
//! Each blend runs through `blend_into` (the no-grad hot path into a reused
//! buffer) on f32 features shaped `[16, 64, elements / 1024]`. Bytes counted
//! per call are what one fused pass must move: 2 reads + 1 write for a blend
//! and for the naive three-op formula (which moves more in reality), 1 read +
//! 1 write for `copy_`. On CUDA every timed round is bracketed by a device
//! synchronisation. Output: one JSON object per line on stdout (`"kind":
//! "device"` first, then one `"kind": "op"` per operation), a readable table
//! on stderr.

#![allow(missing_docs)]

use std::time::Instant;

use anyhow::{Context, Result, bail};
use kasmina_tensor::blend::kernels::blend_into;
use kasmina_tensor::{BlendSpec, ConfidenceGate};
use tch::{Device, Kind, Tensor};

const ALPHA: f64 = 0.37;
const CHANNELS: i64 = 64;
const BATCH: i64 = 16;

struct Args {
    device: Device,
    elements: i64,
    iters: u32,
    rounds: u32,
    warmup: u32,
    threads: Option<i32>,
}

fn usage() -> &'static str {
    "usage: blend_bandwidth [--device cpu|cuda|auto] [--elements N] [--iters N] [--rounds N] [--warmup N] [--threads N]\n\
     defaults: --device auto; --elements 16777216 (cpu) or 268435456 (cuda); --iters 10 (cpu) or 50 (cuda); \
     --rounds 3; --warmup 2"
}

fn parse_args() -> Result<Args> {
    let mut device = "auto".to_owned();
    let (mut elements, mut iters, mut rounds, mut warmup, mut threads) = (None, None, 3, 2, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{}", usage());
            std::process::exit(0);
        }
        let value = it.next().with_context(|| format!("{flag} needs a value\n{}", usage()))?;
        let number = || value.parse::<i64>().with_context(|| format!("{flag} {value:?}: not a whole number"));
        match flag.as_str() {
            "--device" => device = value.clone(),
            "--elements" => elements = Some(number()?),
            "--iters" => iters = Some(u32::try_from(number()?)?),
            "--rounds" => rounds = u32::try_from(number()?)?,
            "--warmup" => warmup = u32::try_from(number()?)?,
            "--threads" => threads = Some(i32::try_from(number()?)?),
            other => bail!("unknown argument {other:?}\n{}", usage()),
        }
    }
    let device = match device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" if tch::Cuda::is_available() => Device::Cuda(0),
        "cuda" => bail!("--device cuda requested but libtorch sees no CUDA device"),
        "auto" => Device::cuda_if_available(),
        other => bail!("unknown --device {other:?}; use cpu, cuda or auto"),
    };
    let elements = elements.unwrap_or(if device.is_cuda() { 256 << 20 } else { 16 << 20 });
    if elements < BATCH * CHANNELS || elements % (BATCH * CHANNELS) != 0 {
        bail!("--elements must be a positive multiple of {}", BATCH * CHANNELS);
    }
    let iters = iters.unwrap_or(if device.is_cuda() { 50 } else { 10 });
    if iters == 0 || rounds == 0 {
        bail!("--iters and --rounds must be at least 1");
    }
    Ok(Args { device, elements, iters, rounds, warmup, threads })
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Seconds per call: the median and the best of `rounds` rounds of `iters` calls.
fn time(args: &Args, mut op: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    for _ in 0..args.warmup {
        op()?;
    }
    sync(args.device);
    let mut per_call = Vec::with_capacity(args.rounds as usize);
    for _ in 0..args.rounds {
        let start = Instant::now();
        for _ in 0..args.iters {
            op()?;
        }
        sync(args.device);
        per_call.push(start.elapsed().as_secs_f64() / f64::from(args.iters));
    }
    per_call.sort_by(f64::total_cmp);
    Ok((per_call[per_call.len() / 2], per_call[0]))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    tch::manual_seed(7);
    let shape = [BATCH, CHANNELS, args.elements / (BATCH * CHANNELS)];
    let opts = (Kind::Float, args.device);
    let host = Tensor::f_randn(shape, opts)?;
    let seed = Tensor::f_randn(shape, opts)?;
    let logits = Tensor::f_randn([BATCH, 10], opts)?;
    let mut out = Tensor::f_empty_like(&host)?;
    let n = u64::try_from(host.numel())?;
    let alpha_vec: Vec<f32> = (0..CHANNELS).map(|i| i as f32 / CHANNELS as f32).collect();
    let gate = ConfidenceGate { k: 4.0, tau: 0.5, alpha_lo: 0.05, alpha_hi: 0.95 };
    let specs = [
        ("convex", BlendSpec::convex()),
        ("residual", BlendSpec::residual()),
        ("channel", BlendSpec::channel(alpha_vec)?),
        ("confidence", BlendSpec::confidence(gate)?),
    ];
    let device_name = format!("{:?}", args.device);
    println!(
        "{{\"kind\":\"device\",\"device\":\"{device_name}\",\"elements\":{n},\"shape\":{shape:?},\"dtype\":\"f32\",\
         \"threads\":{},\"iters\":{},\"rounds\":{},\"warmup\":{}}}",
        tch::get_num_threads(),
        args.iters,
        args.rounds,
        args.warmup
    );
    eprintln!("blend bandwidth on {device_name}: {n} f32 elements, shape {shape:?}, median of {} rounds", args.rounds);
    eprintln!("{:<16} {:>12} {:>12} {:>10}", "op", "µs/call", "GB/s", "× copy_");
    let mut copy_gbps = None;
    let mut report = |op: &str, bytes: u64, (median, best): (f64, f64)| {
        let gbps = bytes as f64 / median / 1e9;
        let base = *copy_gbps.get_or_insert(gbps);
        println!(
            "{{\"kind\":\"op\",\"op\":\"{op}\",\"bytes_per_call\":{bytes},\"median_s\":{median:e},\"best_s\":{best:e},\
             \"gbps\":{gbps:.3},\"vs_copy\":{:.4}}}",
            gbps / base
        );
        eprintln!("{op:<16} {:>12.1} {gbps:>12.1} {:>10.2}", median * 1e6, gbps / base);
    };
    let copied = time(&args, || {
        tch::no_grad(|| out.f_copy_(&host))?;
        Ok(())
    })?;
    report("copy_", 8 * n, copied);
    for (name, spec) in &specs {
        let timed = time(&args, || {
            blend_into(spec, ALPHA, &host, &seed, Some(&logits), &mut out)?;
            Ok(())
        })?;
        report(name, 12 * n, timed);
    }
    let naive = time(&args, || {
        let _ = tch::no_grad(|| seed.f_mul_scalar(ALPHA)?.f_add(&host.f_mul_scalar(1.0 - ALPHA)?))?;
        Ok(())
    })?;
    report("naive_three_op", 12 * n, naive);
    Ok(())
}
