"""`python -m ccpanel_client …`, the same as the `ccpanel` command."""

import sys

from .cli import main

sys.exit(main())
