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
# # 04 · Evaluation
#
# The retrieval protocol (`osdpm_lib.metrics.retrieval_metrics`): image→text counts an image as a hit at K
# if any of its captions is in its top K; text→image ranks each caption's own image among all images.
# Ties (identical caption strings embed identically) are broken uniformly at random, as an expected value
# (`metrics.TIE_RULES`); without ties this is the plain ranking of AMFMN and HarMA. The row below re-scores
# the stored test embeddings of the run trained in notebook 03 (the selected epoch) and sets it beside chance,
# and beside the strict rule (a tie with a wrong item counts as a miss) for comparison.

# %% tags=["parameters"]
profile: str = "default"
overrides: dict = {}    # profile fields to override: the runner's --set / --smoke (osdpm_lib.settings)
data_dir: str = ""      # dataset folder; "": data/<chain> (chain: $OSDPM_CHAIN or "embedded")
out_dir: str = ""       # tables/ and figures/ go here; "": results/<chain>
runs_dir: str = ""      # one folder per trained run; "": runs/<chain>
variant: str = "clip"
seed: int = 0

# %%
from osdpm_lib import paths, settings   # relative paths are read from the project root, whatever the working directory

profile = settings.apply(profile, overrides)   # with overrides: a profile of its own, e.g. finetune.smoke

data_dir = paths.resolve(data_dir, "data")
out_dir = paths.resolve(out_dir, "results")
runs_dir = paths.resolve(runs_dir, "runs")

# %%
import json
from pathlib import Path

import numpy as np
import pandas as pd

from osdpm_lib import profiles, tables
from osdpm_lib.evaluate import Encoded
from osdpm_lib.metrics import chance_metrics

run_dir = Path(runs_dir) / profiles.run_name(variant, seed)
saved = json.loads((run_dir / "test_metrics.json").read_text())
enc = Encoded(**np.load(run_dir / "test_encoded.npz"))
metrics = enc.metrics()
assert all(abs(metrics[k] - saved["test"][k]) < 1e-6 for k in metrics), "stored and recomputed metrics differ"
n_images = len(enc.images)
rows = [tables.metrics_row(f"CLIP fine-tune ({variant}, seed {seed})", metrics, test_images=n_images),
        tables.metrics_row("chance", chance_metrics(n_images, len(enc.texts) / n_images), test_images=n_images)]
baseline = pd.DataFrame(rows)
tables.write(baseline, out_dir, "baseline")
baseline.round(2)

# %%
strict = enc.metrics("strict")
print(f"test mR {metrics['mr']:.2f} vs chance {rows[1]['mr']:.2f} ({metrics['mr'] / rows[1]['mr']:.1f}x); "
      f"strict tie rule: mR {strict['mr']:.2f}, Rsum {strict['rsum']:.2f} ({strict['rsum'] - metrics['rsum']:+.2f})")
