//! Gate inputs as the journal keeps them: ordered `(key, value)` text pairs
//! that an operator can read in `journal inspect` and that `journal replay`
//! parses back into exactly the [`GateInputs`] the plugin saw.
//!
//! Floats use Rust's shortest round-trip formatting (`NaN`, `inf` included),
//! lists and maps are JSON with floats as strings for the same reason.
//! Parsing is strict: every field must be present once, unknown keys and
//! malformed values are errors naming the key.

use std::collections::BTreeMap;

use kasmina_plugin_host::gate::{GateInputs, PerformanceStatus};
use leyline::{ParameterBounds, SeedStage};

/// Why recorded gate inputs could not be parsed back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateRecordError {
    /// A field is missing.
    #[error("gate inputs lack {0:?}")]
    Missing(&'static str),
    /// A key this build does not know (written by a newer build?).
    #[error("gate inputs have unknown key {0:?}")]
    Unknown(String),
    /// A key appears twice.
    #[error("gate inputs repeat key {0:?}")]
    Repeated(String),
    /// A value does not parse.
    #[error("gate input {key:?} = {value:?} is not valid: {problem}")]
    Invalid {
        /// Key.
        key: &'static str,
        /// Value as recorded.
        value: String,
        /// What is wrong.
        problem: String,
    },
}

fn f(v: f64) -> String {
    format!("{v:?}")
}

fn floats(v: &[f64]) -> String {
    let texts: Vec<String> = v.iter().map(|x| f(*x)).collect();
    serde_json::to_string(&texts).unwrap_or_default()
}

fn strings(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn performance(p: PerformanceStatus) -> &'static str {
    match p {
        PerformanceStatus::Nominal => "nominal",
        PerformanceStatus::Healthy => "healthy",
        PerformanceStatus::Degraded => "degraded",
        PerformanceStatus::Fallback => "fallback",
        PerformanceStatus::Critical => "critical",
    }
}

/// The inputs as ordered pairs (declaration order of [`GateInputs`]).
pub fn to_pairs(i: &GateInputs) -> Vec<(String, String)> {
    let params: BTreeMap<&str, String> = i.parameters.iter().map(|(k, v)| (k.as_str(), f(*v))).collect();
    let bounds: BTreeMap<&str, [String; 2]> =
        i.parameter_bounds.iter().map(|(k, b)| (k.as_str(), [f(b.min), f(b.max)])).collect();
    let pairs: Vec<(&str, String)> = vec![
        ("seed_id", i.seed_id.clone()),
        ("site", i.site.clone()),
        ("blueprint_id", i.blueprint_id.clone()),
        ("blueprint_known", i.blueprint_known.to_string()),
        ("current_stage", i.current_stage.as_str().to_owned()),
        ("expected_stage", i.expected_stage.as_str().to_owned()),
        ("reported_stage", i.reported_stage.as_str().to_owned()),
        ("parameters", serde_json::to_string(&params).unwrap_or_default()),
        ("parameter_bounds", serde_json::to_string(&bounds).unwrap_or_default()),
        ("kernel_attached", i.kernel_attached.to_string()),
        ("kernel_verified", i.kernel_verified.to_string()),
        ("fallback_used", i.fallback_used.to_string()),
        ("isolation_violations", i.isolation_violations.to_string()),
        ("max_cosine", f(i.max_cosine)),
        ("outputs_finite", i.outputs_finite.to_string()),
        ("loss_window", floats(&i.loss_window)),
        ("loss_variance_threshold", f(i.loss_variance_threshold)),
        ("kernel_latency_us", f(i.kernel_latency_us)),
        ("latency_budget_us", f(i.latency_budget_us)),
        ("host_registered", i.host_registered.to_string()),
        ("required_layers", strings(&i.required_layers)),
        ("available_layers", strings(&i.available_layers)),
        ("interface_matches", i.interface_matches.to_string()),
        ("performance_status", performance(i.performance_status).to_owned()),
        ("metric_delta", f(i.metric_delta)),
        ("metric_tolerance", f(i.metric_tolerance)),
        ("reset_clean", i.reset_clean.to_string()),
    ];
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

struct Fields(BTreeMap<String, String>);

impl Fields {
    fn take(&mut self, key: &'static str) -> Result<String, GateRecordError> {
        self.0.remove(key).ok_or(GateRecordError::Missing(key))
    }

    fn parse<T>(
        &mut self,
        key: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, GateRecordError> {
        let value = self.take(key)?;
        parse(&value).map_err(|problem| GateRecordError::Invalid { key, value, problem })
    }

    fn boolean(&mut self, key: &'static str) -> Result<bool, GateRecordError> {
        self.parse(key, |v| v.parse::<bool>().map_err(|e| e.to_string()))
    }

    fn float(&mut self, key: &'static str) -> Result<f64, GateRecordError> {
        self.parse(key, parse_float)
    }

    fn stage(&mut self, key: &'static str) -> Result<SeedStage, GateRecordError> {
        self.parse(key, |v| SeedStage::parse(v).ok_or_else(|| "not a stage".to_owned()))
    }

    fn strings(&mut self, key: &'static str) -> Result<Vec<String>, GateRecordError> {
        self.parse(key, |v| serde_json::from_str(v).map_err(|e| e.to_string()))
    }
}

fn parse_float(v: &str) -> Result<f64, String> {
    v.parse::<f64>().map_err(|e| e.to_string())
}

/// Parses recorded pairs back into the inputs the plugin saw.
pub fn from_pairs(pairs: &[(String, String)]) -> Result<GateInputs, GateRecordError> {
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        if map.insert(k.clone(), v.clone()).is_some() {
            return Err(GateRecordError::Repeated(k.clone()));
        }
    }
    let mut x = Fields(map);
    let inputs = GateInputs {
        seed_id: x.take("seed_id")?,
        site: x.take("site")?,
        blueprint_id: x.take("blueprint_id")?,
        blueprint_known: x.boolean("blueprint_known")?,
        current_stage: x.stage("current_stage")?,
        expected_stage: x.stage("expected_stage")?,
        reported_stage: x.stage("reported_stage")?,
        parameters: x.parse("parameters", |v| {
            let texts: BTreeMap<String, String> = serde_json::from_str(v).map_err(|e| e.to_string())?;
            texts.into_iter().map(|(k, t)| Ok((k, parse_float(&t)?))).collect()
        })?,
        parameter_bounds: x.parse("parameter_bounds", |v| {
            let texts: BTreeMap<String, [String; 2]> = serde_json::from_str(v).map_err(|e| e.to_string())?;
            texts
                .into_iter()
                .map(|(k, [lo, hi])| Ok((k, ParameterBounds { min: parse_float(&lo)?, max: parse_float(&hi)? })))
                .collect()
        })?,
        kernel_attached: x.boolean("kernel_attached")?,
        kernel_verified: x.boolean("kernel_verified")?,
        fallback_used: x.boolean("fallback_used")?,
        isolation_violations: x.parse("isolation_violations", |v| v.parse::<u32>().map_err(|e| e.to_string()))?,
        max_cosine: x.float("max_cosine")?,
        outputs_finite: x.boolean("outputs_finite")?,
        loss_window: x.parse("loss_window", |v| {
            let texts: Vec<String> = serde_json::from_str(v).map_err(|e| e.to_string())?;
            texts.iter().map(|t| parse_float(t)).collect()
        })?,
        loss_variance_threshold: x.float("loss_variance_threshold")?,
        kernel_latency_us: x.float("kernel_latency_us")?,
        latency_budget_us: x.float("latency_budget_us")?,
        host_registered: x.boolean("host_registered")?,
        required_layers: x.strings("required_layers")?,
        available_layers: x.strings("available_layers")?,
        interface_matches: x.boolean("interface_matches")?,
        performance_status: x.parse("performance_status", |v| match v {
            "nominal" => Ok(PerformanceStatus::Nominal),
            "healthy" => Ok(PerformanceStatus::Healthy),
            "degraded" => Ok(PerformanceStatus::Degraded),
            "fallback" => Ok(PerformanceStatus::Fallback),
            "critical" => Ok(PerformanceStatus::Critical),
            other => Err(format!("{other:?} is not nominal, healthy, degraded, fallback or critical")),
        })?,
        metric_delta: x.float("metric_delta")?,
        metric_tolerance: x.float("metric_tolerance")?,
        reset_clean: x.boolean("reset_clean")?,
    };
    match x.0.into_keys().next() {
        Some(unknown) => Err(GateRecordError::Unknown(unknown)),
        None => Ok(inputs),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> GateInputs {
        GateInputs {
            seed_id: "s\"1".to_owned(),
            site: "hidden".to_owned(),
            blueprint_id: "bp".to_owned(),
            blueprint_known: true,
            current_stage: SeedStage::Training,
            expected_stage: SeedStage::Training,
            reported_stage: SeedStage::Germinated,
            parameters: BTreeMap::from([("lr".to_owned(), 0.1 + 0.2), ("nan".to_owned(), f64::NAN)]),
            parameter_bounds: BTreeMap::from([("lr".to_owned(), ParameterBounds { min: 1e-5, max: f64::INFINITY })]),
            kernel_attached: true,
            kernel_verified: false,
            fallback_used: false,
            isolation_violations: 3,
            max_cosine: -0.25,
            outputs_finite: true,
            loss_window: vec![0.5, f64::NEG_INFINITY, 1e-300],
            loss_variance_threshold: 1.0,
            kernel_latency_us: f64::INFINITY,
            latency_budget_us: 5000.0,
            host_registered: true,
            required_layers: vec!["hidden".to_owned()],
            available_layers: vec!["a,b".to_owned(), "hidden".to_owned()],
            interface_matches: true,
            performance_status: PerformanceStatus::Degraded,
            metric_delta: f64::NAN,
            metric_tolerance: 0.02,
            reset_clean: false,
        }
    }

    #[test]
    fn pairs_round_trip_bit_for_bit_including_non_finite_floats() {
        let inputs = sample();
        let pairs = to_pairs(&inputs);
        assert_eq!(pairs[0], ("seed_id".to_owned(), "s\"1".to_owned()));
        let back = from_pairs(&pairs).unwrap();
        // NaN != NaN, so compare the rendering, which is exact.
        assert_eq!(to_pairs(&back), pairs);
        assert!(back.metric_delta.is_nan() && back.kernel_latency_us == f64::INFINITY);
        assert_eq!(back.parameters["lr"].to_bits(), (0.1f64 + 0.2).to_bits());
    }

    #[test]
    fn parsing_is_strict() {
        let pairs = to_pairs(&sample());
        let missing: Vec<_> = pairs.iter().filter(|(k, _)| k != "fallback_used").cloned().collect();
        assert_eq!(from_pairs(&missing).unwrap_err(), GateRecordError::Missing("fallback_used"));
        let mut extra = pairs.clone();
        extra.push(("surprise".to_owned(), "1".to_owned()));
        assert_eq!(from_pairs(&extra).unwrap_err(), GateRecordError::Unknown("surprise".to_owned()));
        let mut repeated = pairs.clone();
        repeated.push(pairs[0].clone());
        assert!(matches!(from_pairs(&repeated), Err(GateRecordError::Repeated(_))));
        let bad: Vec<_> = pairs
            .iter()
            .map(|(k, v)| if k == "max_cosine" { (k.clone(), "high".to_owned()) } else { (k.clone(), v.clone()) })
            .collect();
        assert!(matches!(from_pairs(&bad), Err(GateRecordError::Invalid { key: "max_cosine", .. })));
    }
}
