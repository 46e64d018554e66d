//! The static run's grafts: the seeded run's fossils, built into the host
//! from step 0.
//!
//! A skeptic's question to a grown model is whether growing helped or any
//! bigger model would do the same. The static run answers it: the same
//! kernels (same files, same SHA-256 as the grafted ones, so the same
//! initial weights), blended as a fossil blends (α = 1), trained with the
//! host by one optimizer from the first step.

use std::io::Cursor;

use anyhow::{Context, Result, bail, ensure};
use leyline::BlendMode;
use sha2::{Digest, Sha256};
use tch::{Tensor, TrainableCModule, nn};

use super::controller::channel_alpha;
use super::setup;
use super::trainer::{Fossil, TrainConfig};

/// One built-in fossil.
struct StaticGraft {
    site: String,
    blend: BlendMode,
    /// Per-channel weights of a CHANNEL blend, shaped to broadcast.
    weight: Option<Tensor>,
    module: TrainableCModule,
}

/// The fossils of a seeded run as plain modules of the host.
pub struct StaticGrafts {
    grafts: Vec<StaticGraft>,
    parameters: i64,
}

impl std::fmt::Debug for StaticGrafts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticGrafts").field("count", &self.grafts.len()).field("parameters", &self.parameters).finish()
    }
}

/// Whether a static run can reproduce a fossil blended this way. A CONFIDENCE
/// blend gates each sample on the host's logits; the static run does not
/// reimplement that gate.
pub fn supported(blend: BlendMode) -> bool {
    matches!(blend, BlendMode::Residual | BlendMode::Convex | BlendMode::Channel)
}

impl StaticGrafts {
    /// Loads every fossil's blueprint file into `vs` under `fossils/` (its
    /// parameters join the host's, so the host's optimizer trains them),
    /// after checking the file is the kernel the seeded run grafted.
    pub fn load(fossils: &[Fossil], vs: &nn::VarStore, config: &TrainConfig) -> Result<Self> {
        let count = || vs.trainable_variables().iter().map(|p| p.numel() as i64).sum::<i64>();
        let before = count();
        let path = vs.root() / "fossils";
        let mut grafts = Vec::new();
        for (i, fossil) in fossils.iter().enumerate() {
            if !supported(fossil.blend) {
                bail!("{}: the static run cannot reproduce a {:?} blend", fossil.seed_id, fossil.blend);
            }
            let file = setup::blueprint_path(&fossil.blueprint_id)?;
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let digest = hex::encode(Sha256::digest(&bytes));
            ensure!(
                digest == fossil.sha256,
                "{} is not the kernel {} grafted (sha256 {digest}, grafted {})",
                file.display(),
                fossil.seed_id,
                fossil.sha256
            );
            let module = TrainableCModule::load_data(&mut Cursor::new(bytes), &path / format!("{i}"))
                .with_context(|| format!("loading {}", file.display()))?;
            let weight = (fossil.blend == BlendMode::Channel).then(|| {
                let channels = config.host.channels(&fossil.site, config.hidden);
                let rank = config
                    .host
                    .sites(config.hidden)
                    .iter()
                    .find(|s| s.name == fossil.site)
                    .map_or(2, |s| s.shape.len());
                let mut shape = vec![1, channels];
                shape.resize(rank, 1);
                Tensor::from_slice(&channel_alpha(channels)).view(shape.as_slice()).to(config.device)
            });
            grafts.push(StaticGraft { site: fossil.site.clone(), blend: fossil.blend, weight, module });
        }
        Ok(StaticGrafts { grafts, parameters: count() - before })
    }

    /// Trainable parameters of the built-in fossils.
    pub fn parameters(&self) -> i64 {
        self.parameters
    }

    /// The features at `site` with every fossil there applied, in slot order.
    pub fn apply(&self, site: &str, h: &Tensor) -> Result<Tensor> {
        let mut h = h.shallow_clone();
        for g in self.grafts.iter().filter(|g| g.site == site) {
            let seed = g.module.forward_ts(&[&h])?;
            h = match (g.blend, &g.weight) {
                (BlendMode::Residual, _) => h + seed,
                (BlendMode::Convex, _) => seed,
                (BlendMode::Channel, Some(w)) => h.lerp_tensor(&seed, w),
                (mode, _) => bail!("the static run cannot blend {mode:?}"),
            };
        }
        Ok(h)
    }
}
