//! What a plugin implements, and the WIT names that identify it.

/// The three plugin kinds (one WIT world each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginKind {
    /// World `gate-plugin`, exporting `gate-policy`.
    GatePolicy,
    /// World `annotation-plugin`, exporting `annotation-parser`.
    AnnotationParser,
    /// World `blueprint-plugin`, exporting `blueprint-policy`.
    BlueprintPolicy,
}

/// Every kind, in a fixed order.
pub const ALL_KINDS: [PluginKind; 3] =
    [PluginKind::GatePolicy, PluginKind::AnnotationParser, PluginKind::BlueprintPolicy];

impl PluginKind {
    /// The WIT interface this kind exports (without package or version).
    pub const fn interface(self) -> &'static str {
        match self {
            PluginKind::GatePolicy => "gate-policy",
            PluginKind::AnnotationParser => "annotation-parser",
            PluginKind::BlueprintPolicy => "blueprint-policy",
        }
    }

    /// The WIT world a plugin of this kind targets.
    pub const fn world(self) -> &'static str {
        match self {
            PluginKind::GatePolicy => "gate-plugin",
            PluginKind::AnnotationParser => "annotation-plugin",
            PluginKind::BlueprintPolicy => "blueprint-plugin",
        }
    }

    /// The kind whose interface is `name`.
    pub fn from_interface(name: &str) -> Option<PluginKind> {
        ALL_KINDS.into_iter().find(|k| k.interface() == name)
    }

    pub(crate) fn from_wit(kind: crate::bindings::wit_types::PluginKind) -> PluginKind {
        use crate::bindings::wit_types::PluginKind as W;
        match kind {
            W::GatePolicy => PluginKind::GatePolicy,
            W::AnnotationParser => PluginKind::AnnotationParser,
            W::BlueprintPolicy => PluginKind::BlueprintPolicy,
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.interface())
    }
}
