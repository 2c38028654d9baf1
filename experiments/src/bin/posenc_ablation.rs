//! `posenc_ablation`: sinusoidal vs learned vs no positional encoding.
//! Flags: `--quick`, `--seeds`, `--steps` / `--minutes`, `--jobs`,
//! `--only`, `--set`, `--out` (see `--help` and
//! `experiments::ablations`).

fn main() -> std::process::ExitCode {
    experiments::ablations::main(
        "posenc",
        "Sinusoidal vs learned vs no positional encoding (Vaswani et al. 2017, Table 3 row E); writes results/posenc/.",
    )
}
