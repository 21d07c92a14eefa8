"""ccpanel: the command-line client of the Claude Code sandbox panel's REST API."""

__version__ = "0.1.0"
