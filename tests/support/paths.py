"""Where the tests find the checkout and put the output of the processes they start."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = ROOT / "var" / "log" / "tests"
