//! Terminal manners shared by every verb: stdout written through
//! [`outln!`] so a closed pipe (`kasmina journal inspect … | head`) ends
//! the verb quietly instead of panicking; errors that carry a hint saying
//! what to do ([`Hinted`]); the error report `main` prints, each cause once;
//! colour only on a terminal and never under `NO_COLOR`.

use std::io::IsTerminal;

/// `println!` that returns the write error instead of panicking on it.
/// Use inside functions returning `anyhow::Result`.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}
pub(crate) use outln;

/// An error with what to do about it: `main` prints `what: source` and then
/// `hint: …` on its own line.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct Hinted {
    /// What failed, in the operator's words.
    pub what: String,
    /// What to do about it.
    pub hint: String,
    /// The underlying error.
    #[source]
    pub source: anyhow::Error,
}

/// Wraps `source` as `what` with `hint`.
pub fn hinted(what: impl Into<String>, hint: impl Into<String>, source: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(Hinted { what: what.into(), hint: hint.into(), source: source.into() })
}

/// Whether `err` is stdout closed under us (EPIPE): the reader has all it
/// wanted, so the verb exits quietly.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

/// The report `main` prints for `err`: the chain of causes joined by `: `,
/// skipping a cause whose text the line already holds (error types that
/// both print and chain their source would otherwise show it twice), then
/// the hint, if any cause carries one.
pub fn error_report(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    let mut report = format!("error: {line}");
    if let Some(h) = err.chain().find_map(|c| c.downcast_ref::<Hinted>()) {
        report.push_str("\nhint: ");
        report.push_str(&h.hint);
    }
    report
}

/// Whether to write ANSI colour to stderr: only when it is a terminal and
/// `NO_COLOR` is unset or empty (no-color.org).
pub fn stderr_colour() -> bool {
    colour_allowed(std::env::var_os("NO_COLOR").as_deref(), std::io::stderr().is_terminal())
}

fn colour_allowed(no_color: Option<&std::ffi::OsStr>, terminal: bool) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_manners_colour_only_on_a_terminal_without_no_color() {
        assert!(colour_allowed(None, true));
        assert!(colour_allowed(Some("".as_ref()), true));
        assert!(!colour_allowed(Some("1".as_ref()), true));
        assert!(!colour_allowed(None, false));
    }

    #[test]
    fn misleading_errors_a_cause_is_printed_once_with_its_hint() {
        #[derive(Debug, thiserror::Error)]
        #[error("Urza library: {0}")]
        struct Wrapper(#[source] std::io::Error);
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = io.to_string();
        let err = hinted("the daemon could not start", "pass --urza DIR", Wrapper(io));
        let report = error_report(&err);
        assert_eq!(report.matches(&text).count(), 1, "{report}");
        assert!(report.ends_with("\nhint: pass --urza DIR"), "{report}");
    }
}
