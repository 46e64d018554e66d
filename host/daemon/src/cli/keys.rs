//! `kasmina keygen`: a fresh HMAC key file, private from the first byte.

use super::output::outln;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use rand::RngCore;

/// Arguments of `kasmina keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// File to create (refused if it exists).
    pub file: PathBuf,
}

/// Writes 32 random bytes as hex, created with mode 0600 (never wider).
pub fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&args.file).map_err(|e| {
            anyhow::anyhow!(
                "cannot create {}: {e} (keygen never overwrites a key; pick a new path or remove the old file)",
                args.file.display()
            )
        })?;
    file.write_all(format!("{}\n", hex::encode(key)).as_bytes())?;
    file.sync_all()?;
    outln!("wrote a new 32-byte HMAC key to {} (mode 0600)", args.file.display());
    Ok(ExitCode::SUCCESS)
}
