"""What every benchmark does first: the test settings with a slot of its own (instance label,
workspace root, network, subnet, Redis database), a fresh SQLite database in var/, and Django
set up. Never a running panel's or test run's resources. Imported, never run by `make bench`."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"


def setup(database: str, slot: str) -> Path:
    """Point Django at var/<database> (removed first) and the test slot `slot` unless
    PANEL_TEST_SLOT says otherwise; returns the database's path."""
    sys.path.insert(0, str(ROOT))
    db = VAR / database
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "controlpanel.settings.test",
            "PANEL_TEST_SLOT": os.environ.get("PANEL_TEST_SLOT", slot),
            "PANEL_TEST_DATABASE_URL": f"sqlite:///{db}",
        }
    )
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    import django

    django.setup()
    return db
