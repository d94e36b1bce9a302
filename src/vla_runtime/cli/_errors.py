"""User errors of a `vla-runtime <command> <verb>` handler as one line on stderr, exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]
EXIT_USAGE = 2


def one_line_errors(
    command: str, errors: tuple[type[BaseException], ...], handler: Handler
) -> Handler:
    """Wrap `handler`: an exception of `errors` prints `vla-runtime COMMAND VERB: <first line>`
    and returns EXIT_USAGE; anything else propagates (a bug keeps its traceback)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except errors as exc:
            text = str(exc).strip()
            message = text.splitlines()[0] if text else repr(exc)
            print(f"vla-runtime {command} {args.verb}: {message}", file=sys.stderr)
            return EXIT_USAGE

    return run
