//! The demo's embedded host: settings, Urza library and key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use kasmina::{EmbeddedHost, HmacKey, HostBuilder, Settings};
use leyline::BlueprintDescriptor;

/// The blueprint the demo grows on the linear host (from the kernel fixtures).
pub const GOOD_BLUEPRINT: &str = kasmina_kernels::fixtures::MLP_ADAPTER_64;
/// The blueprint that fails a gate on the linear host.
pub const BAD_BLUEPRINT: &str = "unstable_64";
/// The residual conv block the conv host grows at `block1`.
pub const CONV_BLOCK_BLUEPRINT: &str = "conv_residual_8";
/// The channel attention the conv host grows at `block2`.
pub const ATTENTION_BLUEPRINT: &str = "channel_attention_16";
/// The blueprint that fails a gate on the conv host (at `block2`).
pub const CONV_BAD_BLUEPRINT: &str = "unstable_conv_16";
/// The demo's own blueprints, each a `<id>.pt` with its
/// `<id>.descriptor.json` in `examples/digits/blueprints`
/// (`make_blueprints.py` there generates both).
pub const DEMO_BLUEPRINTS: [&str; 4] = [BAD_BLUEPRINT, CONV_BLOCK_BLUEPRINT, ATTENTION_BLUEPRINT, CONV_BAD_BLUEPRINT];
/// Largest descriptor file read.
const DESCRIPTOR_CAP: u64 = 1 << 20;

/// Settings of the demo: the SPEC defaults, with a lifecycle short enough to
/// watch a seed live and fossilize in a few hundred steps, and a plugin
/// deadline with headroom for a debug build on a busy 2-core machine.
pub const DEMO_SETTINGS: &str = r#"
[lifecycle]
attach_timeout_steps = 5
training_steps = 40
blend_steps = 40
shadow_steps = 20
probation_steps = 20
[gates]
latency_budget_us = 20000
metric_tolerance = 0.03
[plugins]
deadline_ms = 100
"#;

/// The demo settings, parsed and validated.
pub fn settings() -> Result<Settings> {
    Ok(Settings::from_toml(DEMO_SETTINGS)?)
}

/// A fresh random HMAC key (the controller and the host share it).
pub fn fresh_key() -> Result<HmacKey> {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no OS randomness for the HMAC key: {e}"))?;
    Ok(HmacKey::from_bytes(&bytes)?)
}

/// Where the TorchScript file of a demo blueprint lives.
pub fn blueprint_path(blueprint_id: &str) -> Result<PathBuf> {
    if blueprint_id == GOOD_BLUEPRINT {
        return Ok(kasmina_kernels::fixtures::get(GOOD_BLUEPRINT)?.path);
    }
    if !DEMO_BLUEPRINTS.contains(&blueprint_id) {
        bail!("{blueprint_id} is not one of the demo's blueprints");
    }
    Ok(blueprints_dir().join(format!("{blueprint_id}.pt")))
}

fn blueprints_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("digits/blueprints")
}

/// Publishes the demo's blueprints into an Urza library at `dir` as a user
/// would with `kasmina urza publish <id>.descriptor.json <id>.pt`: the
/// descriptor file as written, the kernel copied and hashed by Urza.
pub fn publish_blueprints(dir: &Path) -> Result<()> {
    let urza = kasmina_kernels::UrzaLibrary::open(dir)?;
    let good = kasmina_kernels::fixtures::get(GOOD_BLUEPRINT)?;
    if urza.entry(GOOD_BLUEPRINT).is_none() {
        urza.publish(good.descriptor, &good.path)?;
    }
    for id in DEMO_BLUEPRINTS {
        if urza.entry(id).is_none() {
            urza.publish(descriptor(id)?, blueprint_path(id)?).with_context(|| format!("publishing {id}"))?;
        }
    }
    Ok(())
}

/// The descriptor file of a demo blueprint, parsed.
pub fn descriptor(blueprint_id: &str) -> Result<BlueprintDescriptor> {
    let path = blueprints_dir().join(format!("{blueprint_id}.descriptor.json"));
    let size = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?.len();
    ensure!(size <= DESCRIPTOR_CAP, "{} is {size} bytes, more than {DESCRIPTOR_CAP}", path.display());
    let text = std::fs::read_to_string(&path)?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The embedded host over the Urza library at `urza_dir`.
pub fn embedded_host(settings: Settings, key: HmacKey, urza_dir: &Path) -> Result<EmbeddedHost> {
    publish_blueprints(urza_dir)?;
    Ok(HostBuilder::new(settings).hmac_key(key).urza_dir(urza_dir).build()?)
}
