//! The digits demo: the README's main job.
//!
//!     scripts/demo.sh                  # set-up if needed, then this example
//!     cargo run -p kasmina-examples --example digits -- --help
//!
//! Trains a small network on the scikit-learn digits set three times with the
//! same initialisation and data order: alone (baseline); while a scripted
//! controller grows seeds through Kasmina (seeded) — useful blueprints that
//! train, blend, shadow, pass probation and fossilize, and an unstable one
//! that a gate culls; and as the seeded run's final architecture trained from
//! step 0 (static). Prints the lifecycle timeline and the three-run table,
//! writes a JSON summary and an SVG figure. `--host conv` (what
//! `scripts/demo.sh` runs) grows a residual conv block and channel attention
//! in a two-block conv net; `--host linear` (the default here) an MLP
//! adapter in a linear net. `--repeats 5` repeats everything over seeds
//! `--seed`, `--seed`+1, … and reports mean ± spread with a verdict:
//!
//!     cargo run -p kasmina-examples --example digits -- --host conv --repeats 5
//!
//! `--daemon <socket>` runs the same scenario against a running `kasmina
//! serve` instead of the embedded host. `--blend confidence` grows the useful
//! seeds as CONFIDENCE blends gated on the batch's logits, and `--teacher`
//! distils the seeded run from the trained baseline:
//!
//!     cargo run -p kasmina-examples --example digits -- --blend confidence --teacher

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use kasmina_examples::demo::stats::Aggregate;
use kasmina_examples::demo::{self, Controller, HostKind, Plan, Summary, TrainConfig, figure, setup};
use kasmina_examples::digits;
use leyline::api::KasminaApi;
use tch::Device;

/// Grow seeds in a digits classifier while it trains.
#[derive(Debug, Parser)]
#[command(
    name = "digits",
    version,
    args_override_self = true,
    about = "Grow seeds in a digits classifier while it trains: a baseline run, the same run while a scripted \
             controller germinates useful and unstable blueprints through Kasmina's gates, and the grown \
             architecture trained from step 0 (static)."
)]
struct Args {
    /// Training steps (mini-batches) per run.
    #[arg(long, default_value_t = 400)]
    steps: u64,
    /// Seed for the split, the initialisation and the batch order (the
    /// first one, with --repeats).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Host network: `conv` (two conv blocks, sites block1 and block2) or
    /// `linear` (one site, hidden). scripts/demo.sh passes `--host conv`.
    #[arg(long, default_value = "linear")]
    host: String,
    /// Repeat the three runs over this many seeds (--seed, --seed+1, …) and
    /// report mean ± spread. Embedded host only.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=20))]
    repeats: u64,
    /// Where to write the SVG figure (with --repeats, the mean curves with a
    /// min–max band; transition marks and α from the first repeat).
    #[arg(long, default_value = "target/digits-demo.svg")]
    figure: PathBuf,
    /// Device: `cpu`, `cuda` or `auto` (CUDA when available).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Run against a `kasmina serve` daemon on this Unix socket instead of
    /// the embedded host. The daemon must serve the demo blueprints and share
    /// the key given with --key-file.
    #[arg(long, value_name = "SOCKET")]
    daemon: Option<PathBuf>,
    /// HMAC key file (hex) shared with the daemon (daemon mode only).
    #[arg(long, requires = "daemon")]
    key_file: Option<PathBuf>,
    /// Path of digits.csv (default: the set-up cache).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where to write the JSON summary.
    #[arg(long, default_value = "target/digits-demo-summary.json")]
    summary: PathBuf,
    /// Blend mode of the useful seed: convex, residual, channel or confidence.
    #[arg(long, default_value = "residual")]
    blend: String,
    /// Distil the seeded run from the trained baseline (knowledge distillation).
    #[arg(long)]
    teacher: bool,
}

fn device(name: &str) -> Result<Device> {
    Ok(match name {
        "cpu" => Device::Cpu,
        "cuda" if tch::Cuda::is_available() => Device::Cuda(0),
        "cuda" => bail!("--device cuda requested but libtorch sees no CUDA device"),
        "auto" => Device::cuda_if_available(),
        other => bail!("unknown --device {other:?}; use cpu, cuda or auto"),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = device(&args.device)?;
    let host = HostKind::parse(&args.host)?;
    let path = match &args.data {
        Some(p) => p.clone(),
        None => digits::default_path()?,
    };
    let blend = leyline::BlendMode::parse(&args.blend.to_ascii_uppercase())
        .with_context(|| format!("unknown --blend {:?}; use convex, residual, channel or confidence", args.blend))?;
    if args.daemon.is_some() && args.repeats > 1 {
        // A daemon keeps its seed slots' fates (FOSSILIZED, EMBARGOED) across runs.
        bail!("--repeats needs the embedded host; against a daemon run one seed per daemon");
    }
    let settings = setup::settings()?;
    let plan = Plan::for_steps(args.steps, settings.lifecycle.probation_steps).with_blend(blend);
    let mut outcomes = Vec::new();
    let mut mode = "embedded";
    for repeat in 0..args.repeats {
        let seed = args.seed + repeat;
        let data = digits::load(&path, seed, device)?;
        if repeat == 0 {
            println!(
                "digits: {} train / {} validation / {} test images; {} host; {} steps per run on {device:?}; {} seed(s)",
                data.train_x.size()[0],
                data.val_x.size()[0],
                data.test_x.size()[0],
                host.as_str(),
                args.steps,
                args.repeats
            );
        }
        if args.repeats > 1 {
            eprintln!("repeat {} of {} (seed {seed})", repeat + 1, args.repeats);
        }
        let teacher_dir = tempfile::Builder::new().prefix("kasmina-demo-teacher").tempdir()?;
        let mut config = TrainConfig::demo(args.steps, seed, device).with_host(host);
        config.teacher = args.teacher.then(|| teacher_dir.path().join("teacher.pt"));
        let controller = |key| Controller::for_host(key, plan, host, config.hidden);
        let outcome = match &args.daemon {
            None => {
                let key = setup::fresh_key()?;
                let urza = tempdir()?;
                let embedded = setup::embedded_host(settings.clone(), key.clone(), urza.path())?;
                let apis = demo::Apis { trainer: &embedded, controller: &embedded };
                demo::run(&config, &data, apis, &mut controller(key), true)?
            }
            Some(socket) => {
                mode = "daemon";
                let key_file = args.key_file.as_deref().context("--daemon needs --key-file (the daemon's HMAC key)")?;
                let key = kasmina::HmacKey::from_file(key_file)?;
                let connect = |role, name| {
                    kasmina_client::DaemonClient::connect_unix(socket, role, name, Default::default())
                        .with_context(|| format!("connecting to the daemon at {}", socket.display()))
                };
                let trainer = connect(leyline::protocol::Role::Trainer, "digits-demo-trainer")?;
                let controller_conn = connect(leyline::protocol::Role::Controller, "digits-demo-controller")?;
                let apis = demo::Apis {
                    trainer: &trainer as &dyn KasminaApi,
                    controller: &controller_conn as &dyn KasminaApi,
                };
                demo::run(&config, &data, apis, &mut controller(key), true)?
            }
        };
        if repeat == 0 {
            print!("{}", demo::report::render(&outcome));
        }
        outcomes.push(outcome);
    }
    let aggregate = Aggregate::of(&outcomes);
    print!("{}", demo::report::render_aggregate(&aggregate));
    let first = &outcomes[0];
    figure::write_svg(&args.figure, &outcomes, host, &aggregate.seeded_vs_baseline.text)?;
    println!("\nfigure: {}", args.figure.display());
    if let Some(dir) = args.summary.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let summary = Summary { mode, host, outcome: first, aggregate: &aggregate, verdict: aggregate.verdict() };
    std::fs::write(&args.summary, serde_json::to_vec_pretty(&summary)?)?;
    println!("JSON summary: {}", args.summary.display());
    Ok(())
}

fn tempdir() -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix("kasmina-demo-urza").tempdir()?)
}
