"""What every benchmark does first: the test settings with a slot of its own (instance label,
workspace root, network, subnet, Redis database), a fresh SQLite database in var/, and Django
set up. Never a running panel's or test run's resources. Imported, never run by `make bench`."""

import os
import random
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


# Source-like text for the benchmarks' data (backup, storage).
WORDS = (
    "def class return import from self if else elif for while in not and or None True False value result data items "
    "config request response error message index count name path file open read write json yield async await const "
    "let var function export default module require string number object array length push map filter reduce"
).split()


def corpus(size: int, rng: random.Random) -> bytes:
    """Source-like text: identifiers, indentation, punctuation and numbers (compresses ~4x)."""
    parts, total = [], 0
    while total < size:
        line = "    " * rng.randrange(4) + " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 10)))
        line += rng.choice(["()", "(x)", " = 0", ": ", "[i]", " + 1", f" = {rng.randrange(10**6)}", ";", ""]) + "\n"
        parts.append(line)
        total += len(line)
    return "".join(parts).encode()[:size]
