//! Kasmina's default annotation parser plugin (SPEC.md §4).
//!
//! - [`parser`]: key dispatch, duplicate and byte-cap checks, blend assembly;
//! - [`scan`]: bounded scanners for JSON/comma lists and numbers — they stop
//!   at the cap + 1st element and never build a list proportional to a
//!   hostile payload;
//! - this file: self-description and the component export.

pub mod parser;
pub mod scan;

use kasmina_plugin_sdk::annotation::{Annotation, ParseError, ParseLimits, ParsedAnnotations};
use kasmina_plugin_sdk::types::{PluginInfo, PluginKind};
use kasmina_plugin_sdk::{AnnotationParser, plugin_info};

/// The default annotation parser.
pub struct DefaultAnnotations;

impl AnnotationParser for DefaultAnnotations {
    fn info() -> PluginInfo {
        plugin_info("kasmina-default-annotations", env!("CARGO_PKG_VERSION"), PluginKind::AnnotationParser)
    }

    fn parse(annotations: Vec<Annotation>, limits: ParseLimits) -> Result<ParsedAnnotations, ParseError> {
        parser::parse(&annotations, &limits)
    }
}

kasmina_plugin_sdk::export_annotation_parser!(DefaultAnnotations);
