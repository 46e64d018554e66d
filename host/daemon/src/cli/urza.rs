//! `kasmina urza publish|list|verify|show`: the blueprint library on disk.

use std::path::PathBuf;
use std::process::ExitCode;

use kasmina_kernels::UrzaLibrary;
use leyline::BlueprintDescriptor;

/// Cap on a descriptor file.
const DESCRIPTOR_CAP: u64 = 1 << 20;

/// The library directory every urza verb needs.
#[derive(Debug, Clone, clap::Args)]
pub struct UrzaDir {
    /// Urza library directory (created by the first publish).
    #[arg(long, env = "KASMINA_URZA")]
    pub urza: PathBuf,
}

/// Urza verbs.
#[derive(Debug, clap::Subcommand)]
pub enum UrzaCommand {
    /// Publish a blueprint: copy and hash its TorchScript file, record its descriptor (atomic catalog update).
    Publish {
        /// Descriptor (.json): blueprint_id, name, tier, parameter_bounds, risk, quarantine_only, approval_required, interface.
        descriptor: PathBuf,
        /// TorchScript kernel (.pt).
        kernel: PathBuf,
        #[command(flatten)]
        dir: UrzaDir,
    },
    /// List published blueprints.
    List {
        #[command(flatten)]
        dir: UrzaDir,
    },
    /// Re-hash every artifact; quarantine mismatches; exits non-zero if any entry is unhealthy.
    Verify {
        #[command(flatten)]
        dir: UrzaDir,
    },
    /// Show one blueprint's descriptor and artifact.
    Show {
        /// Blueprint id.
        id: String,
        #[command(flatten)]
        dir: UrzaDir,
    },
}

/// Runs an urza verb.
pub fn run(cmd: UrzaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UrzaCommand::Publish { descriptor, kernel, dir } => {
            let text = super::read_capped(&descriptor, DESCRIPTOR_CAP, "descriptor")?;
            let parsed: BlueprintDescriptor = super::parse_toml_or_json(&descriptor, &text, "descriptor")?;
            let urza = UrzaLibrary::open(&dir.urza)?;
            let entry = urza.publish(parsed, &kernel)?;
            println!("published {}", entry.summary_line());
        }
        UrzaCommand::List { dir } => {
            let urza = open_existing(&dir)?;
            let entries = urza.list();
            if entries.is_empty() {
                println!("{}: no blueprints (publish one with `kasmina urza publish`)", dir.urza.display());
            }
            for entry in entries {
                println!("{}", entry.summary_line());
            }
        }
        UrzaCommand::Verify { dir } => {
            let report = open_existing(&dir)?.verify_all();
            for (id, outcome) in &report.results {
                println!("{id:<24} {outcome:?}");
            }
            println!("{} of {} artifacts verified", report.ok_count(), report.results.len());
            if !report.all_ok() {
                return Ok(ExitCode::FAILURE);
            }
        }
        UrzaCommand::Show { id, dir } => {
            let entry = open_existing(&dir)?.show(&id).map_err(|e| anyhow::anyhow!("{e} (see `kasmina urza list`)"))?;
            println!("{entry}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn open_existing(dir: &UrzaDir) -> anyhow::Result<UrzaLibrary> {
    anyhow::ensure!(
        dir.urza.is_dir(),
        "{} is not an Urza library directory (publish a blueprint there first)",
        dir.urza.display()
    );
    Ok(UrzaLibrary::open(&dir.urza)?)
}
