//! Admission rules, checked in a fixed order; the first failure decides.

use kasmina_plugin_sdk::blueprint::{AdmissionContext, BlueprintDescriptor, BlueprintTier};
use kasmina_plugin_sdk::check_parameters;
use kasmina_plugin_sdk::types::{Parameter, Verdict};

/// Decides admission of `descriptor` with `requested` parameters in `context`.
pub fn admit(descriptor: &BlueprintDescriptor, requested: &[Parameter], context: &AdmissionContext) -> Verdict {
    let id = descriptor.blueprint_id.as_str();
    if id.trim().is_empty() {
        return Verdict::fail("empty_blueprint_id");
    }
    if context.training_run_id.trim().is_empty() {
        return Verdict::fail("missing_training_run_id").with("blueprint_id", id);
    }
    if !(descriptor.risk.is_finite() && (0.0..=1.0).contains(&descriptor.risk)) {
        return Verdict::fail("invalid_risk").with("blueprint_id", id).with("risk", descriptor.risk);
    }
    if descriptor.tier == BlueprintTier::HighRisk && !context.approved {
        return Verdict::fail("high_risk_not_approved").with("blueprint_id", id);
    }
    if descriptor.quarantine_only && !context.quarantine {
        return Verdict::fail("quarantine_only").with("blueprint_id", id);
    }
    if descriptor.approval_required && !context.approved {
        return Verdict::fail("approval_required").with("blueprint_id", id);
    }
    match check_parameters(requested, &descriptor.parameter_bounds) {
        Some(failure) => failure.with("blueprint_id", id),
        None => Verdict::pass().with("tier", format!("{:?}", descriptor.tier)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kasmina_plugin_sdk::types::ParameterBound;

    fn descriptor() -> BlueprintDescriptor {
        BlueprintDescriptor {
            blueprint_id: "bp-mlp".into(),
            name: "MLP adapter".into(),
            tier: BlueprintTier::Safe,
            parameter_bounds: vec![ParameterBound { name: "width".into(), min: 1.0, max: 64.0 }],
            risk: 0.1,
            quarantine_only: false,
            approval_required: false,
        }
    }

    fn context() -> AdmissionContext {
        AdmissionContext { training_run_id: "run-1".into(), quarantine: false, approved: false }
    }

    fn params(value: f64) -> Vec<Parameter> {
        vec![Parameter { name: "width".into(), value }]
    }

    fn reason(d: BlueprintDescriptor, p: Vec<Parameter>, c: AdmissionContext) -> String {
        admit(&d, &p, &c).reason
    }

    #[test]
    fn safe_blueprint_within_bounds_is_admitted() {
        assert!(admit(&descriptor(), &params(8.0), &context()).passed);
    }

    #[test]
    fn risk_quarantine_and_approval_rules() {
        let high = BlueprintDescriptor { tier: BlueprintTier::HighRisk, ..descriptor() };
        assert_eq!(reason(high.clone(), params(8.0), context()), "high_risk_not_approved");
        assert!(admit(&high, &params(8.0), &AdmissionContext { approved: true, ..context() }).passed);
        let quarantined = BlueprintDescriptor { quarantine_only: true, ..descriptor() };
        assert_eq!(reason(quarantined.clone(), params(8.0), context()), "quarantine_only");
        assert!(admit(&quarantined, &params(8.0), &AdmissionContext { quarantine: true, ..context() }).passed);
        let gated = BlueprintDescriptor { approval_required: true, ..descriptor() };
        assert_eq!(reason(gated, params(8.0), context()), "approval_required");
        assert_eq!(
            reason(BlueprintDescriptor { risk: f64::NAN, ..descriptor() }, params(8.0), context()),
            "invalid_risk"
        );
    }

    #[test]
    fn parameters_must_be_finite_declared_and_in_bounds() {
        assert_eq!(reason(descriptor(), params(f64::NAN), context()), "non_finite_parameter");
        assert_eq!(reason(descriptor(), params(65.0), context()), "parameter_out_of_bounds");
        let other = vec![Parameter { name: "depth".into(), value: 1.0 }];
        assert_eq!(reason(descriptor(), other, context()), "undeclared_parameter");
        let no_run = AdmissionContext { training_run_id: String::new(), ..context() };
        assert_eq!(reason(descriptor(), params(8.0), no_run), "missing_training_run_id");
    }
}
