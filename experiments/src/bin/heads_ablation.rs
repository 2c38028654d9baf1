//! `heads_ablation`: 1, 2, 4, 8 heads at fixed d_model.
//! Flags: `--quick`, `--seeds`, `--steps` / `--minutes`, `--jobs`,
//! `--only`, `--set`, `--out` (see `--help` and
//! `experiments::ablations`).

fn main() -> std::process::ExitCode {
    experiments::ablations::main(
        "heads",
        "1, 2, 4 and 8 attention heads at a fixed d_model (Vaswani et al. 2017, Table 3 row A); writes results/heads/.",
    )
}
