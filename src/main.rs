use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = renkei::cli::Cli::parse();
    match renkei::cli::run(cli) {
        Ok(()) => ExitCode::from(renkei::cli::EXIT_OK),
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}
