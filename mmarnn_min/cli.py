"""What every command shares at its edge: a mistake the user can fix (``UserError``) is one
line on stderr and exit code 2, never a traceback; ``--debug`` shows the traceback instead.
Any other exception is a bug in this package and keeps its traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mmarnn_min.errors import UserError

DEBUG_FLAG = "--debug"


class Parser(argparse.ArgumentParser):
    """argparse's parser with the description kept as written, a ``--debug`` flag, and a usage
    error as one line (``prog: error: ... (see --help)``), exit code 2."""

    def __init__(self, prog: str, description: str | None) -> None:
        super().__init__(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
        self.add_argument(DEBUG_FLAG, action="store_true", help="show the full traceback of an error instead of one line")

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def directory(value: str) -> Path:
    """An argparse type for ``--out``: a path, never the empty string (which would mean here)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must name a directory, got an empty string")
    return Path(value)


def run(main: Callable[[list[str]], object], argv: Sequence[str] | None, prog: str) -> int:
    """Call ``main(argv)`` and return the exit code: 0, 2 for a UserError (its message on one
    line of stderr), 130 for Ctrl-C; argparse's own errors exit 2 as they do."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        main(argv)
    except UserError as error:
        if DEBUG_FLAG in argv:
            raise
        message = " ".join(str(error).split())  # one line, whatever the message held
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    return 0
