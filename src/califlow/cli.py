"""The ``califlow`` command.

Sub-commands are contributed by the modules that implement them: each provides
``add_cli(subparsers)`` which registers a parser with ``set_defaults(func=...)``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, attribute) pairs contributing sub-commands, in help order
_COMMANDS = [
    ("califlow.cli_commands", "add_cli"),
    ("califlow.simulate.cli", "add_cli"),
    ("califlow.deconv.tool", "add_cli"),
    ("califlow.seeding_qc", "add_cli"),
]


def build_parser() -> argparse.ArgumentParser:
    from califlow import __version__

    parser = argparse.ArgumentParser(
        prog="califlow",
        description="Cross-session one-photon calcium imaging (CaliAli method, CNMF-E, OASIS).",
    )
    parser.add_argument("--version", action="version", version=f"califlow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, attr in _COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:  # a broken install must not silently lose sub-commands
            raise ImportError(f"califlow: cannot load the sub-commands of {module} ({exc}); "
                              "the installation is incomplete or broken") from exc
        getattr(mod, attr)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``califlow`` console script (in :func:`califlow.job.job_environment`)."""
    from califlow.job import job_environment

    with job_environment():  # before a sub-command's first parallel kernel
        return _dispatch(argv)


def _dispatch(argv: list[str] | None) -> int:
    """Parse ``argv`` and run the sub-command; its exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "run_workflow", False):
        from califlow.cli_commands import _cmd_run

        return _cmd_run(args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from califlow.errors import CaliflowError, ConfigError

    try:
        return int(args.func(args) or 0)
    except (CaliflowError, ConfigError, FileNotFoundError) as exc:
        print(f"califlow {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
