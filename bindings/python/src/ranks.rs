//! Data-parallel ranks (SPEC.md §10) for `kasmina.torch`'s distributed
//! layer: the rank summary a step report carries (`RankSummary`, mirrored
//! from `leyline::ranks`), and the bytes ranks exchange over their control
//! group — each rank's `StepReport.to_bytes()` gathered to rank 0, and
//! rank 0's answer (`RankBroadcast`: the directives, the step they take
//! effect at, and the verified kernel bytes of every Attach) broadcast back.
//! Every byte string is postcard of contract types: no pickle anywhere.

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde::{Deserialize, Serialize};

use leyline::api::{self as wire, ApiError, ApiErrorCode, KasminaApi};
use leyline::ranks as wranks;

use crate::contract::KernelArtifact;
use crate::directive::GraftDirective;
use crate::errors;

/// One rank's digest of a seed (`stage:α-bits:kernel`, or `absent`).
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct RankDigest {
    /// Global rank.
    pub rank: u32,
    /// Its digest.
    pub digest: String,
}

#[pymethods]
impl RankDigest {
    #[new]
    fn new(rank: u32, digest: String) -> Self {
        RankDigest { rank, digest }
    }
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

/// One seed across the ranks: rank 0's digest and the ranks that differ.
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct RankSeedDigest {
    /// Seed id.
    pub seed_id: String,
    /// Rank 0's digest.
    pub digest: String,
    /// Ranks whose digest differs from rank 0's (empty when all agreed).
    pub divergent: Vec<RankDigest>,
}

#[pymethods]
impl RankSeedDigest {
    #[new]
    #[pyo3(signature = (seed_id, digest, divergent = Vec::new()))]
    fn new(seed_id: String, digest: String, divergent: Vec<RankDigest>) -> Self {
        RankSeedDigest { seed_id, digest, divergent }
    }
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

/// What every data-parallel rank applied this step, and whether they agreed.
#[pyclass(frozen, get_all, from_py_object, eq, module = "kasmina._native")]
#[derive(Debug, Clone, PartialEq)]
pub struct RankSummary {
    /// Ranks folded in.
    pub world_size: u32,
    /// Every rank applied the same to every seed.
    pub agreed: bool,
    /// Per seed, in seed-id order.
    pub seeds: Vec<RankSeedDigest>,
}

#[pymethods]
impl RankSummary {
    #[new]
    fn new(world_size: u32, agreed: bool, seeds: Vec<RankSeedDigest>) -> Self {
        RankSummary { world_size, agreed, seeds }
    }
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

impl From<&RankSummary> for wranks::RankSummary {
    fn from(s: &RankSummary) -> Self {
        wranks::RankSummary {
            world_size: s.world_size,
            agreed: s.agreed,
            seeds: s
                .seeds
                .iter()
                .map(|d| wranks::RankSeedDigest {
                    seed_id: d.seed_id.clone(),
                    digest: d.digest.clone(),
                    divergent: d
                        .divergent
                        .iter()
                        .map(|r| wranks::RankDigest { rank: r.rank, digest: r.digest.clone() })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl From<wranks::RankSummary> for RankSummary {
    fn from(s: wranks::RankSummary) -> Self {
        RankSummary {
            world_size: s.world_size,
            agreed: s.agreed,
            seeds: s
                .seeds
                .into_iter()
                .map(|d| RankSeedDigest {
                    seed_id: d.seed_id,
                    digest: d.digest,
                    divergent: d.divergent.into_iter().map(|r| RankDigest { rank: r.rank, digest: r.digest }).collect(),
                })
                .collect(),
        }
    }
}

/// Rank 0's answer to one step, as broadcast to every rank.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Broadcast {
    step: u64,
    effective_step: u64,
    summary: wranks::RankSummary,
    directives: Vec<wire::GraftDirective>,
    /// One entry per blueprint an Attach names: its artifact, or why rank 0
    /// could not fetch it (every rank then refuses the Attach the same way).
    kernels: Vec<(String, Result<wire::KernelArtifact, ApiError>)>,
}

/// Rank 0's answer to one step, decoded on any rank
/// (`RankBroadcast.from_bytes`): the directives, the step they take effect
/// at, the rank summary rank 0 reported, and the verified kernels.
#[pyclass(frozen, module = "kasmina._native")]
pub struct RankBroadcast {
    inner: Broadcast,
}

#[pymethods]
impl RankBroadcast {
    /// Decodes the bytes rank 0 broadcast.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let inner = postcard::from_bytes(data).map_err(|e| {
            errors::kasmina_error(py, "RankError", format!("undecodable rank broadcast: {e}"), "rank_protocol", None)
        })?;
        Ok(RankBroadcast { inner })
    }

    /// The step whose report this answers.
    #[getter]
    fn step(&self) -> u64 {
        self.inner.step
    }

    /// The step from which the directives take effect.
    #[getter]
    fn effective_step(&self) -> u64 {
        self.inner.effective_step
    }

    /// What every rank applied before this step, as rank 0 reported it.
    #[getter]
    fn summary(&self) -> RankSummary {
        self.inner.summary.clone().into()
    }

    /// The directives, in the order every rank applies them.
    #[getter]
    fn directives(&self) -> Vec<GraftDirective> {
        self.inner.directives.iter().cloned().map(Into::into).collect()
    }

    /// The artifact rank 0 fetched for `blueprint_id`; raises the error it
    /// got instead (the same `KasminaError` on every rank).
    fn kernel(&self, py: Python<'_>, blueprint_id: &str) -> PyResult<KernelArtifact> {
        match self.inner.kernels.iter().find(|(id, _)| id == blueprint_id) {
            Some((_, Ok(artifact))) => Ok(artifact.clone().into()),
            Some((_, Err(err))) => Err(errors::api_error(py, err.clone())),
            None => Err(errors::api_error(
                py,
                ApiError::new(
                    ApiErrorCode::NotFound,
                    format!("rank 0 broadcast no kernel {blueprint_id:?} this step (no Attach named it)"),
                ),
            )),
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "RankBroadcast(step={}, effective_step={}, directives={}, kernels={}, agreed={})",
            self.inner.step,
            self.inner.effective_step,
            self.inner.directives.len(),
            self.inner.kernels.len(),
            self.inner.summary.agreed
        )
    }
}

/// Rank 0's half of a step, with the GIL released: merge the ranks' reports,
/// report, fetch every kernel an Attach names, encode the broadcast.
pub(crate) fn rank_step(
    py: Python<'_>,
    client: &kasmina_client::DaemonClient,
    parts: Vec<Vec<u8>>,
) -> PyResult<Py<PyBytes>> {
    enum Failed {
        Decode(usize, String),
        Merge(wranks::MergeError),
        Api(ApiError),
        Encode(String),
    }
    let encoded = py.detach(|| {
        let mut reports = Vec::with_capacity(parts.len());
        for (rank, part) in parts.iter().enumerate() {
            reports
                .push(postcard::from_bytes::<wire::StepReport>(part).map_err(|e| Failed::Decode(rank, e.to_string()))?);
        }
        let merged = wranks::merge_rank_reports(reports).map_err(Failed::Merge)?;
        let step = merged.step;
        let summary = merged.ranks.clone().ok_or(Failed::Merge(wranks::MergeError::Empty))?;
        let directives = client.step_report(merged).map_err(Failed::Api)?;
        let mut kernels: Vec<(String, Result<wire::KernelArtifact, ApiError>)> = Vec::new();
        for d in &directives {
            if let wire::GraftDirective::Attach { blueprint_id, .. } = d
                && !kernels.iter().any(|(id, _)| id == blueprint_id)
            {
                let fetched = client.fetch_kernel(blueprint_id);
                if let Err(e) = &fetched
                    && matches!(e.code, ApiErrorCode::Transport | ApiErrorCode::ShuttingDown)
                {
                    // The control plane is gone: the whole step fails, on every rank.
                    return Err(Failed::Api(e.clone()));
                }
                kernels.push((blueprint_id.clone(), fetched));
            }
        }
        let broadcast = Broadcast { step, effective_step: step + 1, summary, directives, kernels };
        postcard::to_allocvec(&broadcast).map_err(|e| Failed::Encode(e.to_string()))
    });
    match encoded {
        Ok(bytes) => Ok(PyBytes::new(py, &bytes).unbind()),
        Err(Failed::Decode(rank, e)) => Err(errors::kasmina_error(
            py,
            "RankError",
            format!("rank {rank}'s step report does not decode: {e}"),
            "rank_protocol",
            None,
        )),
        Err(Failed::Merge(e)) => Err(errors::kasmina_error(py, "RankError", e.to_string(), "not_in_lockstep", None)),
        Err(Failed::Api(e)) => Err(errors::api_error(py, e)),
        Err(Failed::Encode(e)) => Err(errors::kasmina_error(
            py,
            "RankError",
            format!("the rank broadcast does not encode: {e}"),
            "rank_protocol",
            None,
        )),
    }
}

/// Postcard bytes of a contract value (what ranks exchange).
pub(crate) fn encode<T: Serialize>(py: Python<'_>, value: &T) -> PyResult<Py<PyBytes>> {
    let bytes = postcard::to_allocvec(value)
        .map_err(|e| errors::kasmina_error(py, "RankError", format!("does not encode: {e}"), "rank_protocol", None))?;
    Ok(PyBytes::new(py, &bytes).unbind())
}

/// A contract value from postcard bytes.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(py: Python<'_>, data: &[u8], what: &str) -> PyResult<T> {
    postcard::from_bytes(data)
        .map_err(|e| errors::kasmina_error(py, "RankError", format!("undecodable {what}: {e}"), "rank_protocol", None))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RankDigest>()?;
    m.add_class::<RankSeedDigest>()?;
    m.add_class::<RankSummary>()?;
    m.add_class::<RankBroadcast>()?;
    Ok(())
}
