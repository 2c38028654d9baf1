//! `report runs/X [runs/Y ...]`: renders a run folder's report again from
//! its files alone (config.toml, vocabulary, metrics.csv, summary.json,
//! best.ckpt): report.md, loss.svg and the attention heatmaps.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Render report.md, loss.svg and attention.svg of run folders.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Run folders (written by translate, lm or copy_task).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Draw the attention heads of this layer (0-based) of each stack
    /// (default: the run's `eval.attention_layer`, else the last).
    #[arg(long)]
    layer: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    // Keep freed memory in the heap: a training step allocates and frees
    // the same buffers every step (see the README, Performance).
    autograd::retain_freed_memory();
    let cli = Cli::parse();
    if let Err(e) = experiments::cli::set_threads(cli.threads) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let mut ok = true;
    for run in &cli.runs {
        match experiments::summary::rerender_with(run, &transformer::Registry::builtin(), cli.layer)
        {
            Ok(()) => println!("{}", run.join("report.md").display()),
            Err(e) => {
                eprintln!("error: {e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
