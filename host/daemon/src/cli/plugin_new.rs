//! `kasmina plugin new gate|annotation|blueprint-policy NAME`: writes a
//! ready plugin crate — Cargo.toml against the SDK, `src/lib.rs` with a
//! policy, its one documented house rule (`your_rule`) and native unit
//! tests, a README with the build / check / deploy loop — that builds to a
//! component and passes `kasmina plugin check` unmodified
//! (`host/daemon/tests/plugin_scaffold.rs` proves it for every kind).
//!
//! The templates are the files under `plugin_new/`, filled by plain
//! `{{placeholder}}` replacement.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kasmina_plugin_host::ApiVersion;

use super::output::outln;

/// Examples shown after the options of `kasmina plugin new --help`.
pub const AFTER_HELP: &str = "\
Examples:
  kasmina plugin new gate my-gates
  kasmina plugin new annotation house-annotations --dir plugins/house-annotations
  kasmina plugin new blueprint-policy strict-admission --sdk ~/src/kasmina/plugins/sdk --json

Then, in the new directory:
  rustup target add wasm32-wasip2                # once
  cargo test                                     # the policy's unit tests, natively
  cargo build --release --target wasm32-wasip2
  kasmina plugin check target/wasm32-wasip2/release/my_gates.wasm";

/// The SDK of the source checkout this binary was built from.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../plugins/sdk");

/// The SDK's package name, checked in whatever `--sdk` points at.
const SDK_PACKAGE: &str = "kasmina-plugin-sdk";

const WASM_TARGET: &str = "wasm32-wasip2";
const BUILD: &str = "cargo build --release --target wasm32-wasip2";
const EXAMPLE_NAME: &str = "my-gates";
const MAX_NAME_BYTES: usize = 64;

/// Names cargo or rustc refuse as a package or library name (keywords,
/// the standard crates), and the SDK's own.
const RESERVED: &str = "abstract alloc as async await become box break const continue core crate do dyn else enum \
    extern false final fn for gen if impl in let loop macro match mod move mut override priv proc-macro proc_macro \
    pub ref return self static std struct super test trait true try type typeof unsafe unsized use virtual where \
    while yield kasmina-plugin-sdk";

const CARGO_TOML: &str = include_str!("plugin_new/Cargo.toml.tmpl");
const README: &str = include_str!("plugin_new/README.md.tmpl");
const GITIGNORE: &str = include_str!("plugin_new/gitignore.tmpl");
const RUSTFMT: &str = include_str!("plugin_new/rustfmt.toml.tmpl");
const GATE_LIB: &str = include_str!("plugin_new/gate.rs.tmpl");
const ANNOTATION_LIB: &str = include_str!("plugin_new/annotation.rs.tmpl");
const BLUEPRINT_LIB: &str = include_str!("plugin_new/blueprint_policy.rs.tmpl");

/// What the new plugin decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A lifecycle gate policy (G0 sanity … G5 reset).
    Gate,
    /// A command annotation parser (blend mode, alpha vector, mesh layers).
    Annotation,
    /// A blueprint admission policy.
    BlueprintPolicy,
}

impl Kind {
    /// The name on the command line.
    fn cli(self) -> &'static str {
        match self {
            Kind::Gate => "gate",
            Kind::Annotation => "annotation",
            Kind::BlueprintPolicy => "blueprint-policy",
        }
    }

    /// The WIT interface it exports (what `plugin check` reports it implements).
    fn interface(self) -> &'static str {
        match self {
            Kind::Gate => "gate-policy",
            Kind::Annotation => "annotation-parser",
            Kind::BlueprintPolicy => "blueprint-policy",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::Gate => "gate policy",
            Kind::Annotation => "annotation parser",
            Kind::BlueprintPolicy => "blueprint admission policy",
        }
    }

    /// The `[plugins.<key>]` table of the host settings that loads it.
    fn settings_key(self) -> &'static str {
        match self {
            Kind::Gate => "gates",
            Kind::Annotation => "annotations",
            Kind::BlueprintPolicy => "blueprint_policy",
        }
    }

    fn lib_template(self) -> &'static str {
        match self {
            Kind::Gate => GATE_LIB,
            Kind::Annotation => ANNOTATION_LIB,
            Kind::BlueprintPolicy => BLUEPRINT_LIB,
        }
    }

    /// What else the README says about trying the plugin out.
    fn readme_extra(self) -> &'static str {
        match self {
            Kind::Gate => {
                "\nBefore it decides anything, a candidate gate plugin can run beside the active one:\n\
                 `[plugins.shadow_gates]` (same keys) reports every disagreement as telemetry and never\n\
                 changes a decision, and `kasmina journal replay JOURNAL --plugin FILE` re-runs the\n\
                 recorded gate decisions of a journal through it and lists where it would have\n\
                 decided differently.\n"
            }
            Kind::Annotation | Kind::BlueprintPolicy => "",
        }
    }
}

/// `kasmina plugin new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// What the plugin decides.
    #[arg(value_enum)]
    pub kind: Kind,
    /// Cargo package name in kebab-case (lowercase letters, digits, '-'; starts with a letter;
    /// at most 64 bytes), e.g. `my-gates`; also the name the plugin declares.
    pub name: String,
    /// Directory to write the crate to [default: ./NAME].
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
    /// The Kasmina plugin SDK crate (`plugins/sdk` of a Kasmina checkout) [default: the SDK of
    /// the checkout this binary was built from].
    #[arg(long, value_name = "PATH")]
    pub sdk: Option<PathBuf>,
    /// Write into an existing non-empty directory (the scaffold's files are overwritten).
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object (kind, name, dir, files, sdk, commands) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Checks `name` is a kebab-case cargo package name; the error says which rule it breaks.
pub fn validate_name(name: &str) -> Result<(), String> {
    let rule = format!(
        "a plugin name is a cargo package name in kebab-case: lowercase ASCII letters, digits and '-', \
         starting with a letter, at most {MAX_NAME_BYTES} bytes (e.g. `{EXAMPLE_NAME}`)"
    );
    let problem = if name.is_empty() {
        "it is empty".to_owned()
    } else if name.len() > MAX_NAME_BYTES {
        format!("it is {} bytes long", name.len())
    } else if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        match c {
            'A'..='Z' => format!("it has the uppercase letter {c:?}"),
            '_' => "it has '_' (use '-')".to_owned(),
            _ => format!("it has the character {c:?}"),
        }
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        "it does not start with a letter".to_owned()
    } else if RESERVED.split_whitespace().any(|reserved| reserved == name) {
        "it is a Rust keyword or a reserved crate name".to_owned()
    } else {
        return Ok(());
    };
    Err(format!("invalid plugin name {name:?}: {problem}; {rule}"))
}

/// `my-gates` → `MyGatesPlugin` (the suffix keeps it clear of the SDK's type names).
fn type_name(name: &str) -> String {
    let mut out = String::new();
    for part in name.split('-').filter(|p| !p.is_empty()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    out.push_str("Plugin");
    out
}

/// The SDK crate: `--sdk`, else the one this binary was built beside; it must name the SDK package.
fn resolve_sdk(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let hint = "pass --sdk /path/to/kasmina/plugins/sdk (the plugins/sdk folder of a Kasmina checkout)";
    let path = match given {
        Some(path) => path.canonicalize().map_err(|e| anyhow::anyhow!("--sdk {}: {e}; {hint}", path.display()))?,
        None => Path::new(BUILT_SDK).canonicalize().map_err(|e| {
            anyhow::anyhow!(
                "this kasmina was built from a checkout whose plugin SDK is no longer at {BUILT_SDK} ({e}); {hint}"
            )
        })?,
    };
    let manifest = path.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| anyhow::anyhow!("{} is not the Kasmina plugin SDK: {e}; {hint}", manifest.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not valid TOML: {e}; {hint}", manifest.display()))?;
    let package = table.get("package").and_then(|p| p.get("name")).and_then(|n| n.as_str());
    anyhow::ensure!(
        package == Some(SDK_PACKAGE),
        "{} names package {package:?}, not {SDK_PACKAGE:?}; {hint}",
        manifest.display()
    );
    anyhow::ensure!(path.to_str().is_some(), "the SDK path {} is not valid UTF-8; {hint}", path.display());
    Ok(path)
}

/// Refuses an existing non-empty directory without `--force`, and anything that is not a directory.
fn check_target(dir: &Path, force: bool) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            anyhow::ensure!(
                force || entries.next().is_none(),
                "{} exists and is not empty; pass --force to write the scaffold into it (its Cargo.toml, \
                 src/lib.rs, README.md, rustfmt.toml and .gitignore are overwritten), or choose another --dir",
                dir.display()
            );
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => anyhow::bail!("cannot use {} as the plugin directory: {e}; choose another --dir", dir.display()),
    }
}

/// A TOML string holding `text` (quoted and escaped as TOML needs).
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// `text` quoted for a POSIX shell when it needs to be.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'+' | b':' | b'='));
    if plain { text.to_owned() } else { format!("'{}'", text.replace('\'', r"'\''")) }
}

/// Replaces every `{{key}}`; a placeholder left over is a bug in a template.
fn fill(template: &str, values: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut text = template.to_owned();
    for (key, value) in values {
        text = text.replace(&format!("{{{{{key}}}}}"), value);
    }
    match text.find("{{") {
        None => Ok(text),
        Some(at) => anyhow::bail!("internal error: a plugin template left a placeholder at byte {at}"),
    }
}

/// Everything one scaffold is: where, what, and its files' contents.
struct Scaffold {
    dir: PathBuf,
    component: PathBuf,
    files: Vec<(&'static str, String)>,
}

fn render(kind: Kind, name: &str, dir: &Path, sdk: &Path) -> anyhow::Result<Scaffold> {
    let crate_ident = name.replace('-', "_");
    // Where cargo writes the component when the build runs in `dir`.
    let target_root = match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(custom) => dir.join(custom),
        None => dir.join("target"),
    };
    let component = target_root.join(WASM_TARGET).join("release").join(format!("{crate_ident}.wasm"));
    let sdk_text = sdk.to_str().unwrap_or_default();
    let type_name = type_name(name);
    let values: [(&str, &str); 12] = [
        ("name", name),
        ("crate_ident", &crate_ident),
        ("type_name", &type_name),
        ("kind", kind.cli()),
        ("kind_title", kind.title()),
        ("interface", kind.interface()),
        ("settings_key", kind.settings_key()),
        ("api_version", ApiVersion::CURRENT.as_str()),
        ("sdk_path", sdk_text),
        ("sdk_path_toml", &toml_string(sdk_text)),
        ("component_toml", &toml_string(&component.display().to_string())),
        ("readme_extra", kind.readme_extra()),
    ];
    let files = vec![
        ("Cargo.toml", fill(CARGO_TOML, &values)?),
        ("src/lib.rs", fill(kind.lib_template(), &values)?),
        ("README.md", fill(README, &values)?),
        ("rustfmt.toml", RUSTFMT.to_owned()),
        (".gitignore", GITIGNORE.to_owned()),
    ];
    Ok(Scaffold { dir: dir.to_owned(), component, files })
}

/// Runs `kasmina plugin new`.
pub fn run(args: NewArgs) -> anyhow::Result<ExitCode> {
    validate_name(&args.name).map_err(anyhow::Error::msg)?;
    let sdk = resolve_sdk(args.sdk.as_deref())?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    check_target(&dir, args.force)?;
    std::fs::create_dir_all(dir.join("src"))
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}; choose another --dir", dir.display()))?;
    let dir = dir.canonicalize().map_err(|e| anyhow::anyhow!("cannot resolve {}: {e}", dir.display()))?;
    let scaffold = render(args.kind, &args.name, &dir, &sdk)?;
    for (file, text) in &scaffold.files {
        let path = scaffold.dir.join(file);
        std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    let dir_text = scaffold.dir.display().to_string();
    let component = scaffold.component.display().to_string();
    let build_command = format!("cd {} && {BUILD}", shell_word(&dir_text));
    let check_command = format!("kasmina plugin check {}", shell_word(&component));
    let files: Vec<&str> = scaffold.files.iter().map(|(file, _)| *file).collect();
    if args.json {
        let value = serde_json::json!({
            "kind": args.kind.cli(),
            "name": args.name,
            "dir": dir_text,
            "files": files,
            "sdk": sdk.display().to_string(),
            "api_version": ApiVersion::CURRENT.as_str(),
            "build_command": build_command,
            "component_path": component,
            "check_command": check_command,
        });
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!("wrote {} plugin {} to {dir_text}:", args.kind.cli(), args.name);
    for file in &files {
        outln!("  {file}");
    }
    outln!("against the plugin SDK at {} (API {})", sdk.display(), ApiVersion::CURRENT);
    outln!();
    outln!("Its house rule is `your_rule` in src/lib.rs; `cargo test` runs its unit tests natively.");
    outln!("Build the component and check it (`rustup target add {WASM_TARGET}` once, if missing):");
    outln!("  {build_command}");
    outln!("  {check_command}");
    outln!("README.md says how to point `kasmina serve` at it.");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kebab_case_rule_and_say_what_is_wrong() {
        for good in ["my-gates", "a", "gates2", "house-annotations-v2"] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("Bad_Name", "uppercase letter 'B'"),
            ("bad_name", "has '_'"),
            ("1abc", "does not start with a letter"),
            ("-abc", "does not start with a letter"),
            ("", "empty"),
            ("my gates", "character ' '"),
            ("fn", "keyword"),
            ("kasmina-plugin-sdk", "reserved"),
        ] {
            let err = validate_name(bad).err().unwrap_or_default();
            assert!(err.contains(why) && err.contains("kebab-case") && err.contains("`my-gates`"), "{bad}: {err}");
        }
        assert!(validate_name(&"a".repeat(65)).is_err_and(|e| e.contains("65 bytes")));
        assert_eq!(validate_name(&"a".repeat(64)), Ok(()));
    }

    #[test]
    fn every_kind_renders_without_a_placeholder_left() -> anyhow::Result<()> {
        let sdk = Path::new("/opt/kasmina's sdk/plugins/sdk");
        for kind in [Kind::Gate, Kind::Annotation, Kind::BlueprintPolicy] {
            let scaffold = render(kind, "my-gates", Path::new("/tmp/my-gates"), sdk)?;
            let cargo = &scaffold.files[0].1;
            let manifest: toml::Table = toml::from_str(cargo)?;
            assert_eq!(manifest["dependencies"][SDK_PACKAGE]["path"].as_str(), sdk.to_str());
            assert!(manifest["workspace"].as_table().is_some_and(toml::Table::is_empty));
            assert_eq!(manifest["lib"]["crate-type"].as_array().map(Vec::len), Some(1));
            let lib = &scaffold.files[1].1;
            assert!(lib.contains("MyGatesPlugin") && lib.contains("fn your_rule") && lib.contains("#[cfg(test)]"));
            assert!(scaffold.component.ends_with("wasm32-wasip2/release/my_gates.wasm"));
        }
        Ok(())
    }

    #[test]
    fn type_names_and_shell_words() {
        assert_eq!(type_name("my-gates"), "MyGatesPlugin");
        assert_eq!(type_name("gate2--x"), "Gate2XPlugin");
        assert_eq!(shell_word("/tmp/a-b/c.wasm"), "/tmp/a-b/c.wasm");
        assert_eq!(shell_word("/tmp/it's here"), r"'/tmp/it'\''s here'");
    }
}
