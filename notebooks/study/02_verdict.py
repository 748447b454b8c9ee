# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Study 02 · Table 3's verdict on untouched test folds
#
# The final runs (`python -m osdpm_lib.study --stage final`, purpose `study`): `clip`, `clip+dapn` and `osdpm` with
# the settings chosen on validation (notebook 01) and the planned number of seeds, each selected on validation
# with early stopping and scored **once** on every planned test fold (1,000 images each, generated from seeds no
# other part of the project uses; their hashes are in `osdpm_lib/study_folds.json`, and a tuning, design or book
# run that reads one raises an error). This is the **second draw**: fresh seeds (2000 on) and fresh folds (fold10
# on); the first draw's verdict (7 seeds, folds 00–09, inconclusive) is kept in `results/study/draw1/`, and
# notebook 01 says what changed and why.
#
# Every comparison is paired by seed label; the bootstrap resamples seed labels and, per fold, test images with
# their captions; its SD (× √(S/(S−1)) for S seeds) is the standard error and the intervals are difference ± t(S−1)
# × SE (seed variance dominates, and a percentile interval over ten or so resampled seeds is too narrow). Verdicts, with the margin fixed in notebook 01 before these runs:
# **better** / **worse** (95% CI excludes 0), **equivalent** (90% CI inside ±margin: two one-sided tests),
# **inconclusive** (neither). MDE: the difference the design detects with 80% power (two-sided α = 0.05);
# power against the paper's relative gains (3.7% on RSICD, 2.5% on RSITMD) from the same standard error.

# %% tags=["parameters"]
out_dir: str = "results/study"
margin_rel: float = 0.037   # must equal notebook 01's (plan.json), fixed before the final runs
n_boot: int = 2000          # bootstrap replicates of every comparison
n_reps: int = 200           # repetitions of the sensitivity check (each with its own bootstrap)
n_boot_reps: int = 400      # bootstrap replicates inside each repetition

# %%
import json

import pandas as pd

from osdpm_lib import figures, folds, paths, power, study, tables

out_dir = paths.resolve(out_dir, "results")
tables_dir = out_dir / "tables"
plan = json.loads((tables_dir / "plan.json").read_text())
if abs(plan["margin_rel"] - margin_rel) > 1e-12:
    raise ValueError(f"margin_rel={margin_rel} differs from the plan's {plan['margin_rel']} (fixed before the runs)")
final = pd.read_csv(tables_dir / "final_runs.csv")
fold_names = study.final_fold_names(plan["n_folds"])
print(f"plan: {plan['n_seeds']} seeds × {plan['n_folds']} folds; runs: {len(final)}; "
      f"Rsum margin fixed before the runs: ±{plan['margin_abs']:.2f}")

# %% [markdown]
# ## Training to a plateau
#
# Each run stops after 3 epochs without a better validation Rsum (never before epoch 9, at most 12); the selected
# epoch is the best one.

# %%
below = final["best_epoch"] < final["max_epochs"]
print(f"selected epoch below the maximum ({study.MAX_EPOCHS}) in {below.mean():.0%} of {len(final)} runs; "
      f"stopped early in {(final['epochs_run'] < final['max_epochs']).mean():.0%}")
final.groupby("variant")[["best_epoch", "epochs_run", "train_s"]].describe().round(1).T

# %% [markdown]
# ## The study's Table 3: means over seeds (each the mean over the folds)

# %%
systems = study.load_systems(final, fold_names)
means = study.variant_table(systems)
rsicd_clip = tables.reported("RSICD", "table3").set_index("method").loc["CLIP"]
means["rsicd_clip_ft_mr"] = float(rsicd_clip["rsum"]) / 6
tables.write(means, out_dir, "study_means")
means[["variant", "n_seeds", "n_folds", "rsum", "rsum_sd", "mr", "mrr_i2t", "mrr_t2i", "medr_i2t", "medr_t2i"]].round(2)

# %%
print(f"clip fine-tuned here: mR {means.set_index('variant').loc['clip', 'mr']:.2f} on 1,000-image folds; "
      f"the paper's fine-tuned CLIP on RSICD (1,093 test images): mR {float(rsicd_clip['rsum']) / 6:.2f}")

# %% [markdown]
# ## Paired comparisons, MDE, power and verdicts

# %%
comp = study.comparison_table(systems, margin_rel, plan["margin_abs"], n_boot=n_boot)
tables.write(comp, out_dir, "study_comparisons")
table3 = comp[comp["metric"] == "rsum"].drop(columns=["metric"]).reset_index(drop=True)
tables.write(table3, out_dir, "table3_study", latex=True)
table3[["comparison", "diff", "ci95_low", "ci95_high", "ci90_low", "ci90_high", "mde", "mde_rel_pct",
        "power_at_3.7pct", "power_at_2.5pct", "verdict"]].round(3)

# %%
note = study.protocol_note(final, fold_names, n_boot)
(tables_dir / "protocol_note.txt").write_text(note + "\n")
print(note)

# %% [markdown]
# Rank metrics beside Rsum (mean reciprocal rank in percent, higher is better; median rank, lower is better; ties
# in expectation), through the same paired bootstrap; margin ±3.7% of clip's value.

# %%
comp[comp["metric"] != "rsum"][["comparison", "metric", "clip_value", "diff", "ci95_low", "ci95_high",
                                 "mde_rel_pct", "verdict"]].round(3)

# %%
figures.save(figures.forest_plot(table3, plan["margin_abs"]).figure, out_dir, "S2_forest_rsum")

# %% [markdown]
# ## Where the variance comes from
#
# Per fold of 1,000 images: seed (which run), image (which test images) and seed × image; the shares are those of
# the variance of the study's estimate with its seeds and folds.

# %%
var = study.variance_table(systems)
tables.write(var, out_dir, "study_variance")
var.round(3)

# %% [markdown]
# ## Sensitivity check: can the instrument see the paper's effect?
#
# From the measured `clip` runs: a copy whose similarities get a calibrated boost on the true pairs (+3.7% Rsum on
# average, calibrated on one fold of every seed) against clip, and clip against clip (no true difference). Each repetition is a study of the same size
# (per seed slot two different runs, every fold's images resampled) analysed exactly as above.

# %%
sens = study.sensitivity_check(final, fold_names, plan["margin_abs"], n_reps=n_reps, n_boot=n_boot_reps,
                               base=systems["clip"])
sens_table = pd.DataFrame([{k: v for k, v in sens.items() if k != "counts"}])
tables.write(sens_table, out_dir, "study_sensitivity")
(tables_dir / "study_sensitivity_counts.json").write_text(json.dumps(sens["counts"], indent=2) + "\n")
sens_table.round(4).T

# %%
verdict = {"margin_abs": plan["margin_abs"], "margin_rel": margin_rel, "n_seeds": plan["n_seeds"],
           "n_folds": plan["n_folds"], "selected_below_max": float(below.mean()),
           "detection_rate": sens["detection_rate"], "false_positive_rate": sens["false_positive_rate"],
           "comparisons": table3[["comparison", "diff", "ci95_low", "ci95_high", "ci90_low", "ci90_high", "mde",
                                  "mde_rel_pct", "power_at_3.7pct", "power_at_2.5pct", "verdict"]]
           .round(4).to_dict(orient="records")}
(tables_dir / "verdict.json").write_text(json.dumps(verdict, indent=2) + "\n")
print(json.dumps({k: v for k, v in verdict.items() if k != "comparisons"}, indent=1))
