"""What no name the panel takes may hold, whoever gives it: a file name, a team's name, a git
identity, a checkpoint's label."""

import re

# Unicode's Bidi_Control characters (UAX #9): each changes the direction of the text after it
# on screen, so that "\u202egnp.exe" shows as "exe.png" in a listing, a message or the audit
# trail, while the file is what its real name says.
_BIDI_CONTROL = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def bidi_problem(text: str, what: str) -> str | None:
    """Why `text` cannot be `what` ("A file name"), or None: its first bidirectional control."""
    found = _BIDI_CONTROL.search(text)
    if found is None:
        return None
    return f"{what} may not contain U+{ord(found.group()):04X}, a character that changes the direction text is shown in."
