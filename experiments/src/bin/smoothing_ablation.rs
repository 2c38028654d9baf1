//! `smoothing_ablation`: label smoothing 0 vs 0.1: perplexity and BLEU.
//! Flags: `--quick`, `--seeds`, `--steps` / `--minutes`, `--jobs`,
//! `--only`, `--set`, `--out` (see `--help` and
//! `experiments::ablations`).

fn main() -> std::process::ExitCode {
    experiments::ablations::main(
        "smoothing",
        "Label smoothing 0 vs 0.1: validation perplexity and greedy BLEU (Vaswani et al. 2017, Table 3 row D); writes results/smoothing/.",
    )
}
