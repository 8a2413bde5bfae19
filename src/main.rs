//! The `lightunet` binary: a thin layer over the library. Arguments are parsed and validated in
//! `cli`, the work is done by library modules, and errors are printed as a chain.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::keep_freed_memory();
    cli::init_tracing();
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            cli::exit::status_of(&err)
        }
    }
}
