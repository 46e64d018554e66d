//! `kasmina urza publish|list|verify|show`: the blueprint library on disk.

use super::output::outln;
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
        /// Print JSON (one array of catalog entries) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every artifact; quarantine mismatches; exits non-zero if any entry is unhealthy.
    Verify {
        #[command(flatten)]
        dir: UrzaDir,
        /// Print JSON (one object per blueprint, and the totals) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show one blueprint's descriptor and artifact.
    Show {
        /// Blueprint id.
        id: String,
        #[command(flatten)]
        dir: UrzaDir,
        /// Print the catalog entry as JSON.
        #[arg(long)]
        json: bool,
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
            outln!("published {}", entry.summary_line());
        }
        UrzaCommand::List { dir, json } => {
            let urza = open_existing(&dir)?;
            let entries = urza.list();
            if json {
                outln!("{}", serde_json::to_string_pretty(&entries)?);
                return Ok(ExitCode::SUCCESS);
            }
            if entries.is_empty() {
                outln!("{}: no blueprints (publish one with `kasmina urza publish`)", dir.urza.display());
            }
            for entry in entries {
                outln!("{}", entry.summary_line());
            }
        }
        UrzaCommand::Verify { dir, json } => {
            let report = open_existing(&dir)?.verify_all();
            if json {
                let results: Vec<serde_json::Value> = report
                    .results
                    .iter()
                    .map(|(id, outcome)| {
                        serde_json::json!({ "blueprint_id": id, "ok": outcome.is_ok(), "outcome": format!("{outcome:?}") })
                    })
                    .collect();
                let value = serde_json::json!({ "verified": report.ok_count(), "total": report.results.len(), "results": results });
                outln!("{}", serde_json::to_string_pretty(&value)?);
            }
            for (id, outcome) in report.results.iter().filter(|_| !json) {
                outln!("{id:<24} {outcome:?}");
            }
            if !json {
                outln!("{} of {} artifacts verified", report.ok_count(), report.results.len());
            }
            if !report.all_ok() {
                return Ok(ExitCode::FAILURE);
            }
        }
        UrzaCommand::Show { id, dir, json } => {
            let entry = open_existing(&dir)?.show(&id).map_err(|e| anyhow::anyhow!("{e} (see `kasmina urza list`)"))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&entry)?);
            } else {
                outln!("{entry}");
            }
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
