//! The plugin API versions this host serves, side by side.
//!
//! Why two: a policy author's plugin must keep working when the interface
//! grows. A plugin declares its version through the names of its exports
//! (`esper:kasmina/gate-policy@0.1.0`), which [`crate::inspect`] reads before
//! any of its code runs; the version then picks the bindings its calls go
//! through. A 0.1.0 gate plugin gets its inputs *projected* from the current
//! ones (the fields 0.2.0 added are left out) and its text attributes are
//! read as text values. See `wit/README.md` for what changed.

/// A served version of the `esper:kasmina` WIT package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiVersion {
    /// `wit/since_v0.1.0/`: frozen. Text-only verdict attributes; gate
    /// inputs without blend statistics or rank agreement.
    V0_1,
    /// `wit/since_v0.2.0/`: current. Typed verdict attributes; gate inputs
    /// carry the seed's blend statistics and rank agreement.
    V0_2,
}

/// Every served version, oldest first.
pub const SERVED_VERSIONS: [ApiVersion; 2] = [ApiVersion::V0_1, ApiVersion::V0_2];

impl ApiVersion {
    /// The version new plugins should target (the SDK's and the defaults').
    pub const CURRENT: ApiVersion = ApiVersion::V0_2;

    /// The semver string, as in the WIT package and in `info().api-version`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V0_1 => "0.1.0",
            ApiVersion::V0_2 => "0.2.0",
        }
    }

    /// The served version named `text`, if any.
    pub fn parse(text: &str) -> Option<ApiVersion> {
        SERVED_VERSIONS.into_iter().find(|v| v.as_str() == text)
    }

    /// Every served version, for messages: `0.1.0, 0.2.0`.
    pub fn served_list() -> String {
        SERVED_VERSIONS.map(ApiVersion::as_str).join(", ")
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip_and_unknown_ones_are_not_served() {
        for v in SERVED_VERSIONS {
            assert_eq!(ApiVersion::parse(v.as_str()), Some(v));
        }
        assert_eq!(ApiVersion::parse("0.9.0"), None);
        assert_eq!(ApiVersion::parse("0.2"), None);
        assert_eq!(ApiVersion::served_list(), "0.1.0, 0.2.0");
        assert_eq!(ApiVersion::CURRENT, *SERVED_VERSIONS.last().unwrap_or(&ApiVersion::V0_1));
    }
}
