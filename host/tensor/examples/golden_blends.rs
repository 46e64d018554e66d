//! Writes the golden blend vectors the Python grafter is checked against.
//!
//!     cargo run -p kasmina-tensor --example golden_blends
//!
//! Output: `bindings/python/tests/fixtures/golden_blends.json` (see
//! `tests/support/golden.rs` for what each case runs). Regenerate it when a
//! blend kernel changes on purpose, then run the Python parity test
//! (`scripts/test.sh` runs both sides).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[allow(dead_code)] // `compare` is for the test
#[path = "../tests/support/golden.rs"]
mod golden;

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join(golden::FIXTURE);
    std::fs::write(&path, golden::generate())?;
    println!("wrote {}", path.display());
    Ok(())
}
