"""Allow ``python -m bids_infantseg``."""

import sys

from bids_infantseg.cli.main import main

sys.exit(main())
