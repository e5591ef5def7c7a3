"""The ``ddia-ray`` command line.

Every subcommand has ``--help``. Subcommands connect to Ray through
:func:`ddia_ray.runtime.ensure_ray`: ``RAY_ADDRESS`` joins a cluster, otherwise
a local Ray is started on demand and stopped at exit.

Each subcommand is a module of this package named for it, listed in
:data:`SUBCOMMAND_MODULES`; ``_args`` holds the argument checkers several of them
share and ``_run`` the end of a run they share (release the store, print the verdict).
A module imports Ray and the rest of what it runs inside ``run``, so that
``ddia-ray --help`` and the other subcommands do not pay for it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser", "SUBCOMMAND_MODULES"]

#: Every subcommand, in the order ``ddia-ray --help`` lists them, and the module that holds it.
#: Each module has ``add_parser(sub)``, which adds its parser to the subparsers ``sub``, and
#: ``run(args) -> int``, which runs it and returns the exit code.
SUBCOMMAND_MODULES = {
    "demo": "ddia_ray.cli.demo",
    "raft": "ddia_ray.cli.raft",
    "replicate": "ddia_ray.cli.replicate",
    "partition": "ddia_ray.cli.partition",
    "events": "ddia_ray.cli.events",
    "conflicts": "ddia_ray.cli.conflicts",
    "info": "ddia_ray.cli.info",
    "config": "ddia_ray.cli.config",
    "schema": "ddia_ray.cli.schema",
    "plugins": "ddia_ray.cli.plugins",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ddia-ray`` (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="ddia-ray",
        description="Designing Data-Intensive Applications patterns as fault-tolerant building blocks on Ray.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in SUBCOMMAND_MODULES.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``ddia-ray``; returns the process exit code."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return importlib.import_module(SUBCOMMAND_MODULES[args.command]).run(args)
