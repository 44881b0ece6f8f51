"""A run directory is a unit of work: one training run writes it, nothing else does, and what
it holds is never lost by accident.

- **One process at a time.** ``RunDirectory.lock`` takes an OS lock on ``OUT/.lock`` (released
  by the OS if the process dies) and writes who holds it there; a second process is refused
  with the holder's pid, host and command.
- **Nothing is replaced without being asked.** A command that would replace results already in
  OUT (a fresh run into a finished run's directory, or a stage run again) is refused, listing
  them, unless ``--overwrite``; ``--resume`` continues instead. A directory that holds other
  files than a run's is never written into.
- **Results belong to their configuration.** ``--resume`` with another configuration is refused
  with the changed fields listed; so is running a later stage with a change to a field that an
  earlier stage, whose results it would build on, depended on.
- **A run id** (``OUT/run.json``) is made by a fresh run and stamped into every checkpoint, so
  networks from different runs are never used together (``mmarnn_min.checkpoints``).

Every check runs before the first byte is written; ``config.json`` is written after them.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from mmarnn_min.errors import UserError
from mmarnn_min.files import write_json

LOCK_NAME = ".lock"
RUN_FILE = "run.json"
CONFIG_FILE = "config.json"
RUN_FILES = (CONFIG_FILE, RUN_FILE, "timings.json", "report.json", "report.md", LOCK_NAME)
RUN_DIRS = ("mma", "features", "mrnn", "oracle", "e2e", "plots")


class RunDirectoryError(UserError):
    """A run directory that cannot be used as asked (busy, holding results, not a run)."""


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """{"mrnn": {"lr": 1}} -> {"mrnn.lr": 1}: the dotted path of every leaf field."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        flat |= flatten(value, path + ".") if isinstance(value, dict) else {path: value}
    return flat


def changed_fields(old: dict, new: dict) -> dict[str, tuple[object, object]]:
    """The leaf fields whose values differ: dotted path -> (old, new); a field missing on one
    side counts as changed (None there)."""
    before, after = flatten(old), flatten(new)
    return {path: (before.get(path), after.get(path)) for path in sorted(before.keys() | after.keys())
            if before.get(path) != after.get(path)}


def describe_changes(changes: dict[str, tuple[object, object]], limit: int = 6) -> str:
    text = "; ".join(f"{path} was {old!r}, now {new!r}" for path, (old, new) in list(changes.items())[:limit])
    return text + (f"; and {len(changes) - limit} more" if len(changes) > limit else "")


class OutputDirectory:
    """The directory ``path`` a command writes its results into (``--out``): never a file,
    never a directory holding files the command does not write, one process at a time."""

    kind = "command"
    own_entries: tuple[str, ...] = (LOCK_NAME,)   # the names it writes; see ``owns``

    def __init__(self, path: str | Path) -> None:
        if str(path).strip() == "":
            raise RunDirectoryError("--out must name a directory, got an empty string")
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(f"--out {self.path} is a file, not a directory")

    def owns(self, name: str) -> bool:
        return name in self.own_entries or name.startswith(".")

    def check_is_ours(self) -> None:
        """Refuse a directory that holds anything this command does not write."""
        foreign = sorted(entry.name for entry in self.path.iterdir() if not self.owns(entry.name)) \
            if self.path.is_dir() else []
        if foreign:
            raise RunDirectoryError(f"--out {self.path} holds files that are not a {self.kind}'s results "
                                    f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}): "
                                    f"choose an empty or new directory")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the directory for this process (creating it if needed); refuse a directory that
        holds files not ours, or that another process holds."""
        self.check_is_ours()
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK_NAME, "a+")
        try:
            try:
                import fcntl
            except ImportError:  # no fcntl (Windows): runs are not serialised there
                yield
                return
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RunDirectoryError(f"{self.path} is in use by {holder}: wait for it to finish, "
                                        f"or choose another --out") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')} "
                         f"({' '.join(sys.argv)[:200]})")
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            handle.close()


class RunDirectory(OutputDirectory):
    """The directory of one training run (see the module docstring)."""

    kind = "training run"
    own_entries = RUN_FILES + RUN_DIRS

    def saved_config(self) -> dict | None:
        """The run's ``config.json``, or None when there is none."""
        path = self.path / CONFIG_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise RunDirectoryError(f"{path} cannot be read ({error}): the run directory is damaged") from None

    def run_id(self) -> str | None:
        path = self.path / RUN_FILE
        try:
            return json.loads(path.read_text())["run_id"] if path.is_file() else None
        except (OSError, ValueError, KeyError, TypeError):
            raise RunDirectoryError(f"{path} cannot be read: the run directory is damaged") from None

    def start_run(self) -> str:
        """A new run id, written to ``run.json``."""
        run_id = uuid.uuid4().hex
        write_json({"run_id": run_id, "created": time.strftime("%Y-%m-%d %H:%M:%S")}, self.path / RUN_FILE)
        return run_id

    def write_config(self, config: dict) -> None:
        write_json(config, self.path / CONFIG_FILE)


def results_present(run: OutputDirectory, outputs: dict[str, Sequence[str]], stages: Sequence[str]) -> list[str]:
    """The entries of ``outputs[stage]`` (paths under the directory) that exist, for every
    stage of ``stages``."""
    return [name for stage in stages for name in outputs[stage] if (run.path / name).exists()]
