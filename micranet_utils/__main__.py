"""``python -m micranet_utils``: the ``micranet`` command (also under ``torchrun -m micranet_utils train``)."""

import sys

from .cli import main

sys.exit(main())
