//! `residual_ablation`: with vs without residual connections at depth 2 and 6, with the rank-collapse telemetry.
//! Flags: `--quick`, `--seeds`, `--steps` / `--minutes`, `--jobs`,
//! `--only`, `--set`, `--out` (see `--help` and
//! `experiments::ablations`).

fn main() -> std::process::ExitCode {
    experiments::ablations::main(
        "residual",
        "With vs without residual connections at depth 2 and 6 on English->German, with the rank-collapse telemetry (Dong et al. 2021); writes results/residual/.",
    )
}
