//! The demo's embedded host: settings, Urza library and key.

use std::path::Path;

use anyhow::{Context, Result};
use kasmina::{EmbeddedHost, HmacKey, HostBuilder, Settings};
use leyline::{BlueprintDescriptor, BlueprintTier, DType, Dim, KernelInterface, TensorSpec};

/// The blueprint the demo grows (from the kernel fixtures).
pub const GOOD_BLUEPRINT: &str = kasmina_kernels::fixtures::MLP_ADAPTER_64;
/// The blueprint that fails a gate (`examples/digits/blueprints`).
pub const BAD_BLUEPRINT: &str = "unstable_64";

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

/// Publishes the demo's blueprints into an Urza library at `dir`.
pub fn publish_blueprints(dir: &Path) -> Result<()> {
    let urza = kasmina_kernels::UrzaLibrary::open(dir)?;
    let good = kasmina_kernels::fixtures::get(GOOD_BLUEPRINT)?;
    if urza.entry(GOOD_BLUEPRINT).is_none() {
        urza.publish(good.descriptor, &good.path)?;
    }
    if urza.entry(BAD_BLUEPRINT).is_none() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("digits/blueprints/unstable_64.pt");
        urza.publish(unstable_descriptor(), &path).context("publishing unstable_64")?;
    }
    Ok(())
}

fn unstable_descriptor() -> BlueprintDescriptor {
    let io = TensorSpec { shape: vec![Dim::Batch, Dim::Fixed(64)], dtype: DType::F32 };
    BlueprintDescriptor {
        blueprint_id: BAD_BLUEPRINT.to_owned(),
        name: "Unstable adapter 64 (overflows: demo of a gate failure)".to_owned(),
        tier: BlueprintTier::Experimental,
        parameter_bounds: Default::default(),
        risk: 0.6,
        quarantine_only: false,
        approval_required: false,
        interface: KernelInterface { inputs: vec![io.clone()], outputs: vec![io] },
    }
}

/// The embedded host over the Urza library at `urza_dir`.
pub fn embedded_host(settings: Settings, key: HmacKey, urza_dir: &Path) -> Result<EmbeddedHost> {
    publish_blueprints(urza_dir)?;
    Ok(HostBuilder::new(settings).hmac_key(key).urza_dir(urza_dir).build()?)
}
