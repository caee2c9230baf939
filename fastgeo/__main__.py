"""``python -m fastgeo ...``: the ``fastgeo`` command."""

import sys

from .cli import main

sys.exit(main())
