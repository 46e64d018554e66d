//! The digits demo: the README's main job.
//!
//!     scripts/demo.sh                  # set-up if needed, then this example
//!     cargo run -p kasmina-examples --example digits -- --help
//!
//! Trains a small network on the scikit-learn digits set twice with the same
//! data order: once alone (baseline), once while a scripted controller grows
//! seeds through Kasmina — a useful adapter that trains, blends, shadows,
//! passes probation and fossilizes, and an unstable blueprint that a gate
//! culls. Prints the lifecycle timeline and an accuracy table and writes a
//! JSON summary. `--daemon <socket>` runs the same scenario against a running
//! `kasmina serve` instead of the embedded host. `--blend confidence` grows
//! the useful seed as a CONFIDENCE blend gated on the batch's logits, and
//! `--teacher` distils the seeded run from the trained baseline:
//!
//!     cargo run -p kasmina-examples --example digits -- --blend confidence --teacher

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use kasmina_examples::demo::{self, Controller, Plan, Summary, TrainConfig, setup};
use kasmina_examples::digits;
use leyline::api::KasminaApi;
use tch::Device;

/// Grow seeds in a digits classifier while it trains.
#[derive(Debug, Parser)]
#[command(
    name = "digits",
    version,
    about = "Grow seeds in a digits classifier while it trains: a baseline run, then the same run while a \
             scripted controller germinates a useful and an unstable blueprint through Kasmina's gates."
)]
struct Args {
    /// Training steps (mini-batches) per run.
    #[arg(long, default_value_t = 400)]
    steps: u64,
    /// Seed for the split, the initialisation and the batch order.
    #[arg(long, default_value_t = 7)]
    seed: u64,
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
    let path = match &args.data {
        Some(p) => p.clone(),
        None => digits::default_path()?,
    };
    let data = digits::load(&path, args.seed, device)?;
    let blend = leyline::BlendMode::parse(&args.blend.to_ascii_uppercase())
        .with_context(|| format!("unknown --blend {:?}; use convex, residual, channel or confidence", args.blend))?;
    let teacher_dir = tempfile::Builder::new().prefix("kasmina-demo-teacher").tempdir()?;
    let mut config = TrainConfig::demo(args.steps, args.seed, device);
    config.teacher = args.teacher.then(|| teacher_dir.path().join("teacher.pt"));
    let settings = setup::settings()?;
    let plan = Plan::for_steps(args.steps, settings.lifecycle.probation_steps).with_blend(blend);
    println!(
        "digits: {} train / {} validation / {} test images; {} steps per run on {device:?}",
        data.train_x.size()[0],
        data.val_x.size()[0],
        data.test_x.size()[0],
        args.steps
    );
    let (mode, outcome) = match &args.daemon {
        None => {
            let key = setup::fresh_key()?;
            let urza = tempdir()?;
            let host = setup::embedded_host(settings, key.clone(), urza.path())?;
            let mut controller = Controller::demo(key, plan);
            let apis = demo::Apis { trainer: &host, controller: &host };
            ("embedded", demo::run(&config, &data, apis, &mut controller, true)?)
        }
        Some(socket) => {
            let key_file = args.key_file.as_deref().context("--daemon needs --key-file (the daemon's HMAC key)")?;
            let key = kasmina::HmacKey::from_file(key_file)?;
            let connect = |role, name| {
                kasmina_client::DaemonClient::connect_unix(socket, role, name, Default::default())
                    .with_context(|| format!("connecting to the daemon at {}", socket.display()))
            };
            let trainer = connect(leyline::protocol::Role::Trainer, "digits-demo-trainer")?;
            let controller_conn = connect(leyline::protocol::Role::Controller, "digits-demo-controller")?;
            let mut controller = Controller::demo(key, plan);
            let apis =
                demo::Apis { trainer: &trainer as &dyn KasminaApi, controller: &controller_conn as &dyn KasminaApi };
            ("daemon", demo::run(&config, &data, apis, &mut controller, true)?)
        }
    };
    print!("{}", demo::report::render(&outcome));
    if let Some(dir) = args.summary.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.summary, serde_json::to_vec_pretty(&Summary { mode, outcome: &outcome })?)?;
    println!("\nJSON summary: {}", args.summary.display());
    Ok(())
}

fn tempdir() -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix("kasmina-demo-urza").tempdir()?)
}
