"""The panel's settings as a production start-up reads them, in a fresh interpreter."""

import json
import os
import subprocess
import sys
from collections.abc import Callable

from tests.support.paths import ROOT


def base_settings(*names: str, unset: Callable[[str], bool]) -> list:
    """The settings `names` as a production start-up reads them (controlpanel.settings.base, in
    a fresh interpreter), from this environment less the variables `unset` names (a Path as text)."""
    env = {k: v for k, v in os.environ.items() if not unset(k)}
    env["DJANGO_SETTINGS_MODULE"] = "controlpanel.settings.base"
    code = (
        "import django; django.setup(); from django.conf import settings as s; import json; "
        f"print(json.dumps([getattr(s, name) for name in {list(names)!r}], default=str))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)
