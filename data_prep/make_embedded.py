"""Generate the embedded synthetic benchmark (stand-in for RSICD).

    python data_prep/make_embedded.py OUT_DIR --n-images N --seed S --image-size P

Writes OUT_DIR/dataset_embedded.json (Karpathy schema), OUT_DIR/images/*.jpg and
OUT_DIR/ground_truth.json; does nothing when OUT_DIR already holds the same parameters.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from osdpm_lib.synth import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
