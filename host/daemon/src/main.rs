//! `kasmina`: the operator's command line. Each verb group lives in its
//! own module under `cli/`; `kasmina <verb> --help` documents every verb.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
