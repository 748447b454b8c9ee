"""``python -m osdpm_lib.synth``: see :func:`osdpm_lib.synth.main`."""

import sys

from osdpm_lib.synth import main

sys.exit(main())
