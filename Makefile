# The two set-up commands of the README:
#   make book   venv + install + WordNet + embedded benchmark + the whole notebook chain -> results/embedded
#               (fine-tunes from the shipped pretrained checkpoint; `make pretrain` rebuilds it)
#   make test   pytest (library) + nbval (the executed CI-size notebooks in results/ci) + their stored metrics
#               + notebook 04 run in JupyterLab by headless Chromium
#   make lab    JupyterLab at the project root with the book's kernel (README: "Step through the book")
#   make test-real  the real architecture on CPU: ViT-B-32 (random weights, a local .pt) at 224 px through notebooks
#               01-07 on a few real-layout images, with the runner's smoke overrides (beyond make test's budget;
#               .ci/run calls both)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# One CPU kernel path on every x86-64 machine with AVX2: torch, MKL and oneDNN otherwise pick their kernels by the
# processor (AVX2 / AVX-512 / vendor), which changes the last bits of every step, and training amplifies them
# (docs/REPRODUCIBILITY.md).  Other processors ignore these.
export ATEN_CPU_CAPABILITY := avx2
export MKL_CBWR := AVX2
export ONEDNN_MAX_CPU_ISA := AVX2

.PHONY: setup wordnet browser lab book book-ci baselines-full study conditions pretrain pretrain-resnet tune test test-real test-all unit nbval bench mutate clean

setup: $(VENV)/.installed wordnet

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (osdpm)" >/dev/null
	touch $@

# WordNet for nltk, offline: Debian's packages copied into the venv's NLTK_DATA tree (plus lexnames).
wordnet: $(VENV)/.installed
	@test -f /usr/share/wordnet/data.noun || $(SUDO) apt-get install -y -q wordnet-base wordnet-sense-index \
	  || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q wordnet-base wordnet-sense-index)
	$(PY) -m osdpm_lib.priors provision-wordnet

# Headless Chromium and its driver for the JupyterLab browser test (tests_book/test_lab_browser.py).
browser:
	@(command -v chromium && command -v chromedriver) >/dev/null || $(SUDO) apt-get install -y -q chromium chromium-driver \
	  || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver)

# Step through the book: JupyterLab at the project root, kernel "Python 3 (osdpm)" (this venv).  Open a notebook of
# notebooks/ with right click > Open With > Notebook.  OSDPM_CHAIN=ci make lab: defaults name data/ci, runs/ci, results/ci.
lab: setup
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=$(CURDIR) --MappingKernelManager.default_kernel_name=python3 \
	  $(if $(SUDO),,--allow-root)

book: setup
	$(PY) -m osdpm_lib.runner --profile default

# The CI-size chain: trained afresh, without progress bars (their timings would differ between runs).
book-ci: setup
	rm -rf runs/ci data/ci/.cache
	TQDM_DISABLE=1 $(PY) -m osdpm_lib.runner --profile ci
	TQDM_DISABLE=1 $(PY) -m osdpm_lib.runner --study --name ci/conditions --only 03 -p size ci
	cp results/ci/tables/ablation_runs.csv tests_book/expected_ci_metrics.csv
	$(PY) -m osdpm_lib.bench --mode ci --out results/bench.md

# The study behind Table 3's verdict (README "The study"; osdpm_lib/study.py): equal tuning on validation, a pilot,
# the plan (notebooks/study/01_plan.py fixes the equivalence margin), the final runs scored once on the untouched
# test folds, the verdict (02_verdict.py) -> results/study.  About 3 h on 2 cores from scratch; finished runs are
# reused (or carried over: study.carry_over).
# Notebook 08 at the baselines' `full` profile (every system, the originals' caption epochs) into
# results/embedded_full, beside the book's CLIP runs (after make book: data/embedded, runs/embedded/clip_s<seed>).
# BASELINE_SEEDS=0 runs seed 0 only; a later call with more seeds reuses the runs made.
# BASELINE_SYSTEMS=VSE++,GaLR runs those systems only (the others are listed as left out of the run).
BASELINE_SEEDS ?=
BASELINE_SYSTEMS ?=
baselines-full: setup
	TQDM_DISABLE=1 $(PY) -m osdpm_lib.runner --name embedded_full --only 08 -p profile full -p data_dir data/embedded \
	  -p runs_dir runs/embedded -p tables_dir results/embedded -p seeds "$(BASELINE_SEEDS)" \
	  -p systems "$(BASELINE_SYSTEMS)"

study: setup
	TQDM_DISABLE=1 $(PY) -m osdpm_lib.study --stage tune
	TQDM_DISABLE=1 $(PY) -m osdpm_lib.study --stage pilot
	$(PY) -m osdpm_lib.runner --study --only 01
	TQDM_DISABLE=1 $(PY) -m osdpm_lib.study --stage final
	$(PY) -m osdpm_lib.runner --study --only 02

# The book's pretrained CLIP (osdpm_lib/weights/osdpm-tiny-vit_synthpre.safetensors + .json): corpus + training.
pretrain: setup
	$(PY) -m osdpm_lib.pretrain

# The baselines' ResNet-18 pretrained on the same corpus (osdpm_lib/weights/resnet18_synthpre.safetensors + .json).
pretrain-resnet: setup
	$(PY) -m osdpm_lib.baselines.pretrain

# The fine-tuning hyperparameters of the default profile, chosen on validation (docs/TUNING.md).
tune: setup
	$(PY) -m osdpm_lib.tuning

# Two pytest workers (pytest-xdist): most unit tests are single-threaded Python, so two run in about 3/4 of the time.
unit: setup
	$(PY) -m pytest -n 2 tests

# The controlled-conditions study (README "Conditions"; osdpm_lib/study_conditions.py, notebooks/study/03): the
# study's settings and stopping rule on four generator conditions, 4 seeds x 4 untouched folds each, verdicts against
# the same margin -> results/conditions.  About 2 h on 2 cores; finished runs are reused.  The default condition is
# the study's latest draw (make study first).
conditions: setup
	TQDM_DISABLE=1 $(PY) -m osdpm_lib.study_conditions
	TQDM_DISABLE=1 $(PY) -m osdpm_lib.runner --study --name conditions --only 03

# nbval re-executes the stored CI-size notebooks in place and compares outputs (sanitised);
# tests_book then checks the metrics they regenerated against stored values with a tolerance, and runs notebook 04
# in JupyterLab in headless Chromium on the runs nbval left in runs/ci (screenshot: build/test-artifacts/).
nbval: setup browser
	rm -rf runs/ci data/ci/.cache
	TQDM_DISABLE=1 $(PY) -m pytest --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg results/ci
	$(PY) -m pytest -m "not real_architecture" tests_book

test: unit nbval

# every test: make test (its 10-minute budget) and the real-architecture test (minutes more); .ci/run calls this
test-all: test test-real

# tests_book/test_real_architecture.py: open_clip ViT-B-32 with random weights saved as a local state dict, 224 px,
# 16 real-layout images (JPEG and TIFF), notebooks 01-07 with --smoke's overrides; Table 3 and the figures checked.
test-real: setup
	TQDM_DISABLE=1 $(PY) -m pytest -m real_architecture tests_book

bench: setup
	$(PY) -m osdpm_lib.bench --mode cpu --out results/bench.md

# Mutation testing (mutmut, requirements-dev.txt) of metrics, stats, losses, models and train's selection/step code,
# each against its own targeted tests; too slow for CI (docs/MUTATION.md records the last score).
# MUTATE=metrics limits it to some modules.
mutate: setup
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	TQDM_DISABLE=1 $(PY) tools/mutate.py $(MUTATE)

clean:
	rm -rf runs data/*/.cache
