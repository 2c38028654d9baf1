//! `translate`: English->German on the bundled data. `translate` (or
//! `translate train`) trains the default run (about 10 minutes on 2 cores)
//! and prints its perplexity, BLEU and sample translations;
//! `translate eval runs/X` evaluates a run again; `translate decode runs/X
//! "The weather is nice today."` translates sentences (or stdin's lines).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use experiments::cli::{TrainArgs, set_threads, train_and_report};
use experiments::corpus::Vocabs;
use experiments::evaluate::translate;
use experiments::summary::finish;
use experiments::train::{Outcome, Run, best_checkpoint};
use transformer::{Registry, Trainer};

/// Train, evaluate and use an English->German Transformer on the bundled
/// sentence pairs (data/ding-en-de).
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
    /// Train a run (the default command), then evaluate it and write its
    /// report.
    Train(TrainArgs),
    /// Evaluate a run's best checkpoint again: perplexity, BLEU greedy and
    /// beam, chrF, samples; rewrites its summary.json and report.
    Eval {
        /// The run folder.
        run: PathBuf,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Translate sentences given as arguments, or else one per line of
    /// stdin, with the run's best checkpoint and its vocabulary.
    Decode {
        /// The run folder.
        run: PathBuf,
        /// Sentences to translate (none: read stdin).
        sentences: Vec<String>,
        /// Beam width (1 = greedy).
        #[arg(long, default_value_t = 4)]
        beam: usize,
        /// Length penalty alpha (the paper: 0.6).
        #[arg(long, default_value_t = 0.6)]
        alpha: f64,
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
        None => train_and_report(&cli.train, "translate", &Registry::builtin()).map(|_| ()),
        Some(Cmd::Train(args)) => {
            train_and_report(&args, "translate", &Registry::builtin()).map(|_| ())
        }
        Some(Cmd::Eval { run, threads }) => set_threads(threads).and_then(|()| {
            let run = Run::resume(&run, true)?;
            finish(&run, &Outcome::Finished, true).map(|_| ())
        }),
        Some(Cmd::Decode {
            run,
            sentences,
            beam,
            alpha,
            threads,
        }) => set_threads(threads).and_then(|()| decode(&run, sentences, beam, alpha)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn decode(
    run: &std::path::Path,
    sentences: Vec<String>,
    beam: usize,
    alpha: f64,
) -> Result<(), String> {
    let vocabs = Vocabs::load(run)?;
    let model = Trainer::resume(best_checkpoint(run))
        .map_err(|e| e.to_string())?
        .model;
    if model.config.decoder_only() {
        return Err(format!(
            "{}: a language model, not a translation run",
            run.display()
        ));
    }
    let sentences = if sentences.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("stdin: {e}"))?
    } else {
        sentences
    };
    for out in translate(&model, &vocabs, &sentences, beam, alpha) {
        println!("{out}");
    }
    Ok(())
}
