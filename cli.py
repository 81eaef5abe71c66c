"""The `fastsam-stream` entry point. Errors print one line and exit non-zero; `--debug` shows tracebacks.

It imports only the standard library and errors.py before its signal handlers are in place;
the commands (commands.py) import torch and ultralytics, which takes seconds, so a Ctrl-C or a
SIGTERM during start-up is one line and exit 130, like one during a run.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence

from .errors import EXIT_INTERRUPTED, FastSAMStreamError


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM shuts down like Ctrl-C: sinks are finalised


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the command it names.

    Errors end as one line on stderr and a non-zero status instead of a traceback (`--debug`
    re-raises them).

    Args:
        argv: The arguments after the program name; None reads sys.argv.

    Returns:
        The process exit status: the command's own, the error's exit code, EXIT_INTERRUPTED on
        Ctrl-C or SIGTERM (also during start-up), or 1 for an unexpected error.
    """
    # Explicit, because a process started with SIGINT ignored (a background job) would keep ignoring Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        from . import commands  # seconds of imports (torch, ultralytics), under the handlers above

        args = commands.parser().parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
        )
        return commands.COMMANDS[args.command](args)
    except FastSAMStreamError as exc:
        if debug:
            raise
        print(f"fastsam-stream: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fastsam-stream: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the user gets one line; --debug gives the traceback
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"fastsam-stream: unexpected error: {type(exc).__name__}: {first} (run with --debug)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
