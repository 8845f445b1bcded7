"""``python -m dal`` is the same program as ``dal``."""

import sys

from dal.cli import main

sys.exit(main())
