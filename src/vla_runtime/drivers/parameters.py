"""Checks shared by every driver's `from_parameters`: a typo in a parameter file fails at start
with the known names and a "did you mean", never silently."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest option, or ''."""
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def reject_unknown(what: str, parameters: Mapping[str, Any], known: Iterable[str]) -> None:
    """Raise ValueError naming the first key of `parameters` that is not in `known`."""
    names = set(known)
    for key in parameters:
        if key not in names:
            raise ValueError(
                f"{what}: unknown driver parameter {key!r}; known: {', '.join(sorted(names))}."
                + did_you_mean(key, names)
            )
