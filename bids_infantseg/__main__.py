"""Allow ``python -m bids_infantseg``."""

import sys

from bids_infantseg.cli import main

sys.exit(main())
