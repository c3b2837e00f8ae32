"""The `jobrunbook` command: a thin wrapper over the library.

Each subcommand parses its flags here and calls one library function; nothing
the command line can do is missing from the Python API. Expected failures
(JobrunbookError) print one line naming what failed and how to check it, and
exit 2; they never print a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from jobrunbook._exceptions import JobrunbookError

__all__ = ["main", "build_parser"]

# name -> (module, function, register-arguments function name)
# Each module owns its subcommand: `add_arguments(parser)` and `command(args) -> int`.
_COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("jobrunbook.asynq.summary", "read an asynq Redis: queues, states, failed-task groups"),
    "diagnose": ("jobrunbook.diagnosis.cli", "rank the likely causes of the failures, with the commands to run"),
    "demo": ("jobrunbook.demo.cli", "stand up a live simulated incident on this machine"),
    "remediate": ("jobrunbook.remediate.cli", "act on failed tasks safely: dry run, --confirm N, export, audit"),
    "restore": ("jobrunbook.remediate.restore", "put tasks from a remediation export back, byte for byte"),
    "run": ("jobrunbook.run.cli", "run the runbook for an alert: section notebooks, then report.html"),
    "check": ("jobrunbook.check", "validate the configuration and probe every source of every target"),
    "serve": ("jobrunbook.service.cli", "receive Alertmanager webhooks: a run per firing alert, closed on resolve"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``only``, just that subcommand's module is imported (a fast start)."""
    import importlib

    parser = argparse.ArgumentParser(prog="jobrunbook", description="The 'Job Failure Rate' runbook, executed.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_func=mod.command)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # the first word that is not an option is the subcommand: import only its module
    first = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(only=first if first in _COMMANDS else "").parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args._func
    try:
        return int(func(args) or 0)
    except JobrunbookError as exc:
        print(f"jobrunbook {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
