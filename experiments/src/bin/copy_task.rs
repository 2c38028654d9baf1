//! `copy_task`: the sanity check, under a minute: a tiny Transformer learns
//! to copy random letter strings; the report shows exact match (should be
//! near 100%) and the cross-attention diagonal.

use std::process::ExitCode;

use clap::Parser;
use experiments::cli::{TrainArgs, train_and_report};
use transformer::Registry;

/// Train a tiny Transformer on the copy task (synthetic, from the seed) and
/// report exact match, perplexity and attention.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
}

fn main() -> ExitCode {
    // Keep freed memory in the heap: a training step allocates and frees
    // the same buffers every step (see the README, Performance).
    autograd::retain_freed_memory();
    let cli = Cli::parse();
    // Under `mpirun` (built with the `mpi` feature): join the job.
    let _mpi = match experiments::dist::init() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match train_and_report(&cli.train, "copy", &Registry::builtin()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
