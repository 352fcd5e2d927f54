"""``python -m diffparts.cli``: the same as the ``diffparts`` command."""

import sys

from diffparts.cli import main

sys.exit(main())
