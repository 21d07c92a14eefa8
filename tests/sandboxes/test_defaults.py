"""The production defaults (8 GB, 4 CPUs or all there are) give a sandbox that starts here."""

import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.django_db]


def production_defaults() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env["DJANGO_SETTINGS_MODULE"] = "controlpanel.settings.base"
    code = (
        "import django; django.setup(); from django.conf import settings as s; import json; "
        "print(json.dumps([s.SANDBOX_DEFAULT_MEMORY_MB, s.SANDBOX_DEFAULT_CPUS, s.SANDBOX_MAX_CPUS]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    memory, cpus, max_cpus = json.loads(out.stdout)
    return {"memory_mb": memory, "cpus": cpus, "max_cpus": max_cpus}


def test_default_limits_fit_this_machine_and_start(make_sandbox, clean_docker):
    defaults = production_defaults()
    assert defaults["memory_mb"] == 8192
    assert defaults["cpus"] == min(4, os.cpu_count()) and defaults["max_cpus"] == os.cpu_count()
    sandbox = make_sandbox("defaults", memory_mb=defaults["memory_mb"], cpus=Decimal(str(defaults["cpus"])))
    assert sandbox.status == "running", sandbox.status_detail
