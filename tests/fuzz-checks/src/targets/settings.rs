//! The daemon's settings file (`kasmina::Settings::from_toml`): TOML parsing
//! with `deny_unknown_fields`, then range validation.
//!
//! Input: the file's bytes (invalid UTF-8 replaced, as `from_file` would
//! refuse it before parsing). An accepted file validates again; nothing
//! allocates more than the settings file cap (1 MiB).
//!
//! Run: `scripts/fuzz.sh settings 60` (a host target: links wasmtime and libtorch).

use crate::with_alloc_cap;
use kasmina::settings::Settings;
use kasmina::settings::defaults::SETTINGS_FILE_BYTES_CAP;

/// Runs the check on one input; panics (or aborts, over an allocation cap) on a finding.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = with_alloc_cap(SETTINGS_FILE_BYTES_CAP as usize, "parsing settings", || Settings::from_toml(&text));
    if let Ok(settings) = parsed {
        settings.validate().expect("accepted settings validate again");
    }
}
