//! `all_ablations`: runs every ablation binary's sweep in turn (norm,
//! residual, warmup, heads, smoothing, posenc) with the shared flags and
//! writes `results/README.md`, the index of their verdicts. Finished runs
//! are skipped, so after the six binaries it only rewrites the reports.

fn main() -> std::process::ExitCode {
    experiments::ablations::main_all()
}
