#!/usr/bin/env bash
# One prepared check for a lent GPU machine (H100, 16 cores, no internet), run from the repo root:
#
#     OUT=/some/folder bash benchmarks/gpu_check.sh        # $OUT is set by the device runner
#
# 1. environment report (nvidia-smi, Python, torch / CUDA, compilers) and dependencies: modules that the
#    machine's python3 lacks are installed from the wheels carried in .whl/ (see "Requirements");
# 2. python -m osdpm_lib.bench --mode gpu --out $OUT/bench_gpu.md   (time budget 330 s, killed at 390 s;
#    the report is rewritten after every phase, so a kill keeps what was measured);
# 3. tests/test_ddp.py on CPU (gloo, 2 processes; killed at 150 s).
# Everything printed goes to $OUT/log too.  Total: under 8 minutes.  Exit status: 0 when every step passed.
#
# Requirements on the machine
#   * python3 >= 3.10 with torch (CUDA build) importable -- the 64 MiB carry limit rules out torch wheels;
#   * importable, or as wheels in .whl/ matching that python (cpXY tags for regex / numpy / pillow):
#       open_clip_torch (installed with --no-deps: timm, huggingface_hub, safetensors are optional imports),
#       ftfy + wcwidth, regex, tqdm, numpy, pillow, and torchvision built for the installed torch
#       (torch 2.14.1 <-> torchvision 0.29.1); pytest is optional (test_ddp.py also runs as a script);
#   * for the torch.compile rows: a C compiler (cc/gcc) and the Python headers (Python.h), which Triton
#     needs to build its launcher; without them those rows read "error: ..." and the rest still runs.
set -uo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log") 2>&1
TEE_PID=$!

export HF_HUB_OFFLINE=1 PYTHONHASHSEED=0 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/osdpm-inductor}"
export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-lo}"
PY="${PYTHON:-python3}"
SITE=/tmp/osdpm-site
T0=$(date +%s)
FAILED=()
stamp() { echo; echo "=== [$(( $(date +%s) - T0 ))s] $*"; }

stamp "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi failed"
grep -m1 "model name" /proc/cpuinfo; nproc; free -g | head -2
command -v cc gcc || echo "no C compiler on PATH (torch.compile rows will fail)"
"$PY" - <<'EOF'
import sys, sysconfig, os
print("python", sys.version.split()[0], sys.executable)
inc = sysconfig.get_paths().get("include", "")
print("Python.h:", os.path.exists(os.path.join(inc, "Python.h")), inc)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception as e:
    print("torch import failed:", repr(e))
EOF

stamp "dependencies"
# module -> distributions to install (with --no-deps) when the module is missing
MISSING=$("$PY" - <<'EOF'
import importlib.util
need = {"torch": [], "torchvision": ["torchvision"], "numpy": ["numpy"], "PIL": ["pillow"],
        "ftfy": ["ftfy", "wcwidth"], "regex": ["regex"], "tqdm": ["tqdm"], "open_clip": ["open_clip_torch"]}
out = []
for mod, dists in need.items():
    if importlib.util.find_spec(mod) is None:
        if not dists:
            print("FATAL:" + mod)
        out += dists
print(" ".join(dict.fromkeys(out)))
EOF
)
echo "missing distributions: ${MISSING:-none}"
if [[ "$MISSING" == *FATAL:* ]]; then
  echo "torch is not importable with $PY; set PYTHON=/path/to/python that has a CUDA torch"; exit 2
fi
if [[ -n "$MISSING" ]]; then
  mkdir -p "$SITE"
  "$PY" - "$SITE" $MISSING <<'EOF' || FAILED+=("dependencies")
# pick, per distribution, a wheel in .whl/ that this python can use; pip install --target, or unzip
import re, subprocess, sys, zipfile
from pathlib import Path
site, names = sys.argv[1], sys.argv[2:]
try:
    from packaging.tags import sys_tags
    ok_tags = {str(t) for t in sys_tags()}
except Exception:
    ok_tags = None
v = f"cp{sys.version_info.major}{sys.version_info.minor}"
def usable(w):
    parts = w.name[:-4].split("-")
    py, abi, plat = parts[-3], parts[-2], parts[-1]
    if ok_tags is not None:
        return any(f"{p}-{a}-{q}" in ok_tags for p in py.split(".") for a in abi.split(".") for q in plat.split("."))
    return (py.startswith("py3") or v in py.split(".") or abi == "abi3") and (plat == "any" or "x86_64" in plat)
norm = lambda s: re.sub(r"[-_.]+", "_", s).lower()
wheels = sorted(Path(".whl").glob("*.whl")) if Path(".whl").is_dir() else []
picked, lost = [], []
for n in names:
    c = [w for w in wheels if norm(w.name.split("-")[0]) == norm(n) and usable(w)]
    (picked.append(c[-1]) if c else lost.append(n))
print("wheels:", [w.name for w in picked])
if lost:
    print("NO USABLE WHEEL in .whl/ for:", lost, f"(python {v})")
if picked:
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--target", site, *map(str, picked)])
    if r.returncode != 0:
        print("pip unavailable or failed; unzipping the wheels")
        for w in picked:
            zipfile.ZipFile(w).extractall(site)
sys.exit(1 if lost else 0)
EOF
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import torch, torchvision, open_clip, numpy, PIL, ftfy, regex, tqdm; print('open_clip', open_clip.__version__, 'torchvision', torchvision.__version__)" \
  || { echo "imports still failing; see above"; FAILED+=("imports"); }

stamp "GPU benchmark (python -m osdpm_lib.bench --mode gpu)"
BUDGET="${BENCH_BUDGET:-330}"
timeout -k 10 $((BUDGET + 60)) "$PY" -W ignore::FutureWarning -m osdpm_lib.bench --mode gpu --out "$OUT/bench_gpu.md" --time-budget "$BUDGET" \
  || FAILED+=("bench (rc $?)")

stamp "DDP correctness on CPU (tests/test_ddp.py, gloo, 2 processes)"
if [[ -n "${SKIP_DDP:-}" ]]; then
  echo "skipped (SKIP_DDP set)"
elif "$PY" -c "import pytest" 2>/dev/null; then
  timeout -k 10 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_ddp.py || FAILED+=("test_ddp (rc $?)")
else
  timeout -k 10 150 "$PY" -W ignore tests/test_ddp.py || FAILED+=("test_ddp (rc $?)")
fi

stamp "done in $(( $(date +%s) - T0 )) s; failed: ${FAILED[*]:-none}; report: $OUT/bench_gpu.md"
RC=$(( ${#FAILED[@]} > 0 ))
exec 1>&- 2>&-          # let tee write the last lines of $OUT/log before the script exits
wait "$TEE_PID" 2>/dev/null
exit "$RC"
