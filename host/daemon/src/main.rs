//! `kasmina`: the operator's command line. Each verb group lives in its
//! own module under `cli/`; `kasmina <verb> --help` documents every verb.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        // The reader went away (`kasmina journal inspect … | head`): it has
        // what it wanted; exit quietly, as `cat` would.
        Err(err) if cli::output::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", cli::output::error_report(&err));
            ExitCode::FAILURE
        }
    }
}
