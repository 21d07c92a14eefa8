"""The client is a package of its own (client/), installed nowhere for the tests: imported from
the repository, as its subprocesses run it (PYTHONPATH=client)."""

import sys

from tests.support.paths import ROOT

if str(ROOT / "client") not in sys.path:
    sys.path.insert(0, str(ROOT / "client"))
