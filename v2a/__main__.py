"""``python -m v2a`` (and ``torchrun -m v2a train ...``) runs the command line."""

import sys

from v2a.cli import main

sys.exit(main())
