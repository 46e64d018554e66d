//! The digits demo: the README's main job.
//!
//!     scripts/demo.sh                  # set-up if needed, then this example
//!     cargo run -p kasmina-examples --example digits -- --help
//!
//! Trains the small host network on the scikit-learn digits set with a fixed
//! split and prints progress and the test accuracy. (The seed lifecycle —
//! germination, gates, blending, fossilization — joins as the control plane
//! lands; see issue 8.)

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Parser;
use kasmina_examples::digits::{self, HostNet};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Train a small network on the digits data set.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Training steps (mini-batches).
    #[arg(long, default_value_t = 400)]
    steps: u64,
    /// Seed for the split, the initialisation and the batch order.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Device: `cpu`, `cuda` or `auto` (CUDA when available).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Path of digits.csv (default: the set-up cache).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Mini-batch size.
    #[arg(long, default_value_t = 64)]
    batch: i64,
    /// Width of the hidden layer (the seed site).
    #[arg(long, default_value_t = 64)]
    hidden: i64,
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
    tch::manual_seed(args.seed as i64);
    let path = match &args.data {
        Some(p) => p.clone(),
        None => digits::default_path()?,
    };
    let data = digits::load(&path, args.seed, device)?;
    let n_train = data.train_x.size()[0];
    println!(
        "digits: {} train / {} test images, device {device:?}, {} steps",
        n_train,
        data.test_x.size()[0],
        args.steps
    );

    let vs = nn::VarStore::new(device);
    let net = HostNet::new(&vs.root(), args.hidden);
    let mut opt = nn::Adam::default().build(&vs, 1e-2)?;
    let started = Instant::now();
    let mut last_loss = f64::NAN;
    for step in 0..args.steps {
        let idx = Tensor::randint(n_train, [args.batch], (Kind::Int64, device));
        let x = data.train_x.index_select(0, &idx);
        let y = data.train_y.index_select(0, &idx);
        let loss = net.head(&net.hidden(&x)).cross_entropy_for_logits(&y);
        opt.backward_step(&loss);
        last_loss = loss.double_value(&[]);
        if (step + 1) % 20 == 0 || step + 1 == args.steps {
            let acc = tch::no_grad(|| digits::accuracy(&net.head(&net.hidden(&data.test_x)), &data.test_y));
            let done = (step + 1) * 30 / args.steps.max(1);
            print!(
                "\r[{}{}] step {:>4}/{} loss {:.4} test acc {:.3}",
                "#".repeat(done as usize),
                ".".repeat(30 - done as usize),
                step + 1,
                args.steps,
                last_loss,
                acc
            );
            std::io::stdout().flush()?;
        }
    }
    println!();
    let acc = tch::no_grad(|| digits::accuracy(&net.head(&net.hidden(&data.test_x)), &data.test_y));
    let per_step_ms = started.elapsed().as_secs_f64() * 1e3 / args.steps.max(1) as f64;
    println!("final: loss {last_loss:.4}, test accuracy {acc:.3}, {per_step_ms:.2} ms/step");
    if !acc.is_finite() || !last_loss.is_finite() {
        bail!("training diverged (loss {last_loss}, accuracy {acc})");
    }
    Ok(())
}
