"""Checks of configuration values, each naming the field it refuses and what is allowed.

The config dataclasses call these in ``__post_init__``; ``mmarnn_min.cli_config`` adds the
field's place in the whole configuration (``mrnn.batch_size``) and its flag
(``--mrnn-batch-size``) to the message, so a user reads which setting to change and how.
"""

from __future__ import annotations

import math
from typing import Any

from mmarnn_min.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work. ``field`` names it (None: the config as a whole)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field, self.message = field, message


def at_least(config: Any, field: str, minimum: float, why: str = "") -> None:
    """``config.<field>`` must be >= ``minimum``."""
    value = getattr(config, field)
    if not value >= minimum:  # also refuses NaN
        raise ConfigError(field, f"must be >= {minimum}{' (' + why + ')' if why else ''}, got {value!r}")


def positive(config: Any, field: str) -> None:
    """``config.<field>`` must be a finite number > 0."""
    value = getattr(config, field)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(field, f"must be a finite number > 0, got {value!r}")


def one_of(config: Any, field: str, choices: tuple) -> None:
    """``config.<field>`` must be one of ``choices``."""
    value = getattr(config, field)
    if value not in choices:
        raise ConfigError(field, f"must be one of {', '.join(map(str, choices))}, got {value!r}")


class DivergedError(UserError):
    """Training met a loss that is not a number: it stops there (the last epoch's checkpoint
    stays, so ``--resume`` can continue after the cause is fixed)."""


def finite_loss(loss: float, where: str, hint: str) -> float:
    """``loss``, or a DivergedError naming ``where`` (stage, epoch, step) and what to check."""
    if not math.isfinite(loss):
        raise DivergedError(f"{where}: the training loss is {loss}: {hint}")
    return loss
