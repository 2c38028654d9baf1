//! `lm`: a decoder-only (GPT-style) language model of Jane Austen's novels.
//! `lm` (or `lm train`) trains the default run (about 10 minutes on 2
//! cores) and prints validation bits per character; `lm sample runs/X
//! --prompt "It is a truth" --temperature 0.8 --top-k 40` continues a
//! prompt.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use experiments::cli::{TrainArgs, set_threads, train_and_report};
use experiments::corpus::Vocabs;
use experiments::evaluate::{SampleOptions, sample};
use experiments::train::best_checkpoint;
use transformer::{Registry, Trainer};

/// Train and sample a character-level decoder-only Transformer on the
/// bundled Jane Austen text (data/austen).
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a run (the default command), then evaluate it (bits per
    /// character on the held-out text, samples) and write its report.
    Train(TrainArgs),
    /// Continue a prompt with a trained run's best checkpoint.
    Sample {
        /// The run folder.
        run: PathBuf,
        /// The text to continue.
        #[arg(long, default_value = "It is a truth")]
        prompt: String,
        /// Softmax temperature (lower: more conservative).
        #[arg(long, default_value_t = 0.8)]
        temperature: f64,
        /// Draw among the k likeliest tokens only (0: all).
        #[arg(long, default_value_t = 40)]
        top_k: usize,
        /// Tokens to generate.
        #[arg(long, default_value_t = 400)]
        length: usize,
        /// Seed of the draws.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
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
    let result = match cli.cmd {
        None => train_and_report(&cli.train, "lm", &Registry::builtin()).map(|_| ()),
        Some(Cmd::Train(args)) => train_and_report(&args, "lm", &Registry::builtin()).map(|_| ()),
        Some(Cmd::Sample {
            run,
            prompt,
            temperature,
            top_k,
            length,
            seed,
            threads,
        }) => set_threads(threads).and_then(|()| {
            if !(temperature.is_finite() && temperature > 0.0) {
                return Err(format!("--temperature {temperature} must be positive"));
            }
            let vocabs = Vocabs::load(&run)?;
            let model = Trainer::resume(best_checkpoint(&run))
                .map_err(|e| e.to_string())?
                .model;
            if !model.config.decoder_only() {
                return Err(format!("{}: not a language-model run", run.display()));
            }
            let opts = SampleOptions {
                length,
                temperature,
                top_k,
                seed,
            };
            println!("{prompt}{}", sample(&model, &vocabs, &prompt, &opts));
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
