"""``python -m mfm_core COMMAND ...`` is ``mfm COMMAND ...`` (for ``torchrun -m mfm_core``)."""

import sys

from mfm_core.cli import main

sys.exit(main())
