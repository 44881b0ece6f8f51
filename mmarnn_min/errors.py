"""The one exception type for mistakes a user can fix: a bad flag or config value, a malformed
data file, a missing or corrupt checkpoint, an unreadable video.

Every command (``train``, ``predict``, ``ablate``, ``ceiling``, ``bench``) prints a
``UserError``'s message as one line on stderr and exits with code 2. Any other exception is a
bug in this package and keeps its traceback. The message must say what is wrong and where
(the flag, the file and line, the field) and, when there is one, what to do instead.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user gave us, explained in one line (see the module docstring)."""
