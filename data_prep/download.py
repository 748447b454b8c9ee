"""Download and unpack a real data set into the layout the book reads.

    python data_prep/download.py {rsicd,rsitmd,ucm,sydney,all} [--root data] [--url URL]
                                 [--sha256 HEX] [--timeout S] [--no-progress]
    python data_prep/download.py overlap rsitmd rsicd [--root data]   # near-duplicate pairs -> CSV
    python data_prep/download.py --list      # sources in order, revisions, checksums, manual steps

Writes <root>/<name>/dataset_<name>.json + <root>/<name>/images/ (+ downloads/ and SHA256SUMS);
exits 2 with a message naming the URL and the manual way when a step fails.  The logic lives in
osdpm_lib/download.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from osdpm_lib.download import main

if __name__ == "__main__":
    raise SystemExit(main())
