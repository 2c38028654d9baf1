//! `norm_ablation`: LayerNorm vs BatchNorm (pads excluded) vs no norm, post- and pre-norm.
//! Flags: `--quick`, `--seeds`, `--steps` / `--minutes`, `--jobs`,
//! `--only`, `--set`, `--out` (see `--help` and
//! `experiments::ablations`).

fn main() -> std::process::ExitCode {
    experiments::ablations::main(
        "norm",
        "LayerNorm vs BatchNorm (encoder, pads excluded) vs no normalisation, post- and pre-norm, on English->German; writes results/norm/summary.md with mean ± std over seeds, 95% Welch intervals and verdicts against Shen et al. (2020).",
    )
}
