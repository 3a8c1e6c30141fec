"""How the training CLIs (train, merge, evaluate) report a user's mistake.

A bad config key or value, a missing or unreadable file, or a run folder this version
will not load prints one line, `<prog>: error: <file or key>: <problem>`, and exits
with status 2, as argparse does for bad arguments. `--debug` or LISA_DEBUG=1 shows the
traceback instead. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager

# ConfigError, CheckpointError, JSON and Unicode errors are ValueErrors; missing and
# unreadable files are OSErrors.
USER_ERRORS = (ValueError, OSError)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or set LISA_DEBUG=1)")


def describe(error: BaseException) -> str:
    """The error as one line."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


@contextmanager
def user_errors(prog: str, debug: bool = False):
    """Turn a user's mistake raised inside into one line on stderr and exit status 2."""
    try:
        yield
    except USER_ERRORS as error:
        if debug or os.environ.get("LISA_DEBUG", "") not in ("", "0"):
            raise
        print(f"{prog}: error: {describe(error)}", file=sys.stderr)
        raise SystemExit(2) from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)  # a ValueError: argparse says "invalid positive_int value"
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def device(text: str) -> str:
    """argparse type: a torch device string ("cpu", "cuda:1")."""
    import torch

    try:
        torch.device(text)
    except RuntimeError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text
