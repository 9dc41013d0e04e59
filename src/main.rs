//! The `renkei` binary: parses the command line and calls the library
//! (see `cli/`). The library never imports the CLI.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

mod cli;

fn main() -> ExitCode {
    let matches = cli::Cli::command().get_matches();
    let cli = match cli::Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    cli::warn_stale_crl(&matches);
    match cli::run(cli) {
        Ok(()) => ExitCode::from(cli::EXIT_OK),
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}
