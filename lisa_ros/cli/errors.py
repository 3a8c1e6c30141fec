"""How the command lines report a user's mistake: one line on stderr, exit status 2."""

from __future__ import annotations

import os
import sys
import traceback


def fail(prog: str, error: BaseException, debug: bool = False, what: str = "") -> int:
    """Report `error` as one line on stderr, `prog: error: [what: ]problem` (after its traceback
    with `debug` or LISA_DEBUG=1); returns the exit code, 2."""
    if debug or os.environ.get("LISA_DEBUG", "") not in ("", "0"):
        traceback.print_exception(error)
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    else:
        text = str(error) or type(error).__name__
    prefix = f"{what}: " if what else ""
    print(f"{prog}: error: {prefix}{' '.join(text.split())}", file=sys.stderr)
    return 2
