//! `warmup_ablation`: post-LN vs pre-LN, each with and without learning-rate warmup.
//! Flags: `--quick`, `--seeds`, `--steps` / `--minutes`, `--jobs`,
//! `--only`, `--set`, `--out` (see `--help` and
//! `experiments::ablations`).

fn main() -> std::process::ExitCode {
    experiments::ablations::main(
        "warmup",
        "Post-LN vs pre-LN, each with and without learning-rate warmup, at a peak learning rate where it matters (Xiong et al. 2020); writes results/warmup/.",
    )
}
