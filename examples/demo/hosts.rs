//! The demo's host networks and their seed sites.
//!
//! A network is a chain of stages with a site between consecutive stages:
//! `stage 0 → site 0 → stage 1 → site 1 → … → last stage (the head)`. The
//! training loop hands every site's features to whatever grafts there (the
//! Kasmina trainer, the static run's fossils, or nothing) and continues with
//! what comes back, so one loop serves all three runs.

use anyhow::{Result, bail};
use leyline::Dim;
use tch::{Tensor, nn, nn::Module};

use crate::digits::{CLASSES, FEATURES};

/// Which host network the demo trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostKind {
    /// 64 → 64 (site `hidden`) → 10: a linear classifier in capacity.
    Linear,
    /// Two conv blocks (sites `block1` and `block2`) and a linear head.
    Conv,
}

/// Channels of the first conv block (the `block1` site is [B, 8, 8, 8]).
pub const CONV1_CHANNELS: i64 = 8;
/// Channels of the second conv block (the `block2` site is [B, 16, 4, 4]).
pub const CONV2_CHANNELS: i64 = 16;

/// One seed site: its name and the feature shape seeds there see.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteSpec {
    /// Site name (the `mesh_layers` annotation of a command names it).
    pub name: &'static str,
    /// Feature shape at the site.
    pub shape: Vec<Dim>,
}

impl HostKind {
    /// Parses `linear` or `conv`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "linear" => Ok(HostKind::Linear),
            "conv" => Ok(HostKind::Conv),
            other => bail!("unknown --host {other:?}; use conv or linear"),
        }
    }

    /// The name `parse` accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            HostKind::Linear => "linear",
            HostKind::Conv => "conv",
        }
    }

    /// The seed sites, in forward order (`hidden` is the linear host's width).
    pub fn sites(self, hidden: i64) -> Vec<SiteSpec> {
        let fixed = |n: i64| Dim::Fixed(n as u64);
        match self {
            HostKind::Linear => vec![SiteSpec { name: "hidden", shape: vec![Dim::Batch, fixed(hidden)] }],
            HostKind::Conv => vec![
                SiteSpec { name: "block1", shape: vec![Dim::Batch, fixed(CONV1_CHANNELS), fixed(8), fixed(8)] },
                SiteSpec { name: "block2", shape: vec![Dim::Batch, fixed(CONV2_CHANNELS), fixed(4), fixed(4)] },
            ],
        }
    }

    /// The seed slots the trainer declares: (seed id, site), in the order
    /// seeds at one site run.
    pub fn slots(self) -> &'static [(&'static str, &'static str)] {
        match self {
            HostKind::Linear => &[("seed-a", "hidden"), ("seed-b", "hidden")],
            HostKind::Conv => &[("seed-a", "block1"), ("seed-b", "block2"), ("seed-c", "block2")],
        }
    }

    /// Channels (feature width) at `site`, for per-channel blend weights.
    pub fn channels(self, site: &str, hidden: i64) -> i64 {
        match (self, site) {
            (HostKind::Conv, "block1") => CONV1_CHANNELS,
            (HostKind::Conv, _) => CONV2_CHANNELS,
            (HostKind::Linear, _) => hidden,
        }
    }
}

/// A host network: stages with a seed site after each but the last.
#[derive(Debug)]
pub struct HostNet {
    kind: HostKind,
    stages: Vec<nn::Sequential>,
    sites: Vec<&'static str>,
}

impl HostNet {
    /// Builds the layers under `path` (creation order fixes the initial
    /// weights for a given `tch::manual_seed`).
    pub fn new(kind: HostKind, path: &nn::Path, hidden: i64) -> Self {
        let stages = match kind {
            HostKind::Linear => vec![
                nn::seq().add(nn::linear(path / "fc1", FEATURES as i64, hidden, Default::default())),
                nn::seq().add(nn::linear(path / "fc2", hidden, CLASSES, Default::default())),
            ],
            HostKind::Conv => {
                let padded = nn::ConvConfig { padding: 1, ..Default::default() };
                vec![
                    nn::seq()
                        .add_fn(|x| x.view([-1, 1, 8, 8]))
                        .add(nn::conv2d(path / "conv1", 1, CONV1_CHANNELS, 3, padded))
                        .add_fn(Tensor::relu),
                    nn::seq()
                        .add_fn(|x| x.max_pool2d_default(2))
                        .add(nn::conv2d(path / "conv2", CONV1_CHANNELS, CONV2_CHANNELS, 3, padded))
                        .add_fn(Tensor::relu),
                    nn::seq().add_fn(|x| x.flatten(1, -1)).add(nn::linear(
                        path / "head",
                        CONV2_CHANNELS * 16,
                        CLASSES,
                        Default::default(),
                    )),
                ]
            }
        };
        let sites = kind.sites(hidden).into_iter().map(|s| s.name).collect();
        HostNet { kind, stages, sites }
    }

    /// Which network this is.
    pub fn kind(&self) -> HostKind {
        self.kind
    }

    /// Logits, handing the features at every site to `at_site(index, site,
    /// features)` and continuing with what it returns.
    pub fn forward_with(
        &self,
        x: &Tensor,
        at_site: &mut dyn FnMut(usize, &'static str, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let mut h = x.shallow_clone();
        for (i, stage) in self.stages.iter().enumerate() {
            h = stage.forward(&h);
            if let Some(site) = self.sites.get(i) {
                h = at_site(i, site, &h)?;
            }
        }
        Ok(h)
    }

    /// Logits of the host alone (nothing grafted).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.stages.iter().fold(x.shallow_clone(), |h, stage| stage.forward(&h))
    }

    /// The host's own logits from the features at site `index` onwards
    /// (what a CONFIDENCE blend gates on), without gradients.
    pub fn logits_from(&self, index: usize, h: &Tensor) -> Tensor {
        tch::no_grad(|| self.stages[index + 1..].iter().fold(h.shallow_clone(), |h, stage| stage.forward(&h)))
    }
}
