"""Command line: ``python -m tests.fuzz {run,replay,child}`` (run from the repository root).

* ``run``    - campaigns in bounded child processes; prints a summary and every failure with its replay line.
* ``replay`` - one input in this process, with what was done to the bytes and what happened
  (``--dump FILE`` writes the input's bytes, to attach to a bug report).
* ``child``  - the child's entry point (used by ``run`` and by the test suite).
"""

from __future__ import annotations

import argparse
import os
import sys

from .runner import MEMORY_MB_DEFAULT, campaign, child_main, run_input
from .targets import TARGET_NAMES, get_target


def main(argv=None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit code (1 if anything failed)."""
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run campaigns")
    run.add_argument("--target", action="append", help=f"default: all of {', '.join(TARGET_NAMES)}")
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--iterations", type=int, default=None)
    run.add_argument("--seconds", type=float, default=None, help="time budget per target (instead of iterations)")
    run.add_argument("--timeout", type=float, default=None, help="kill a child after this long (default: budget + 120 s)")
    run.add_argument("--memory-mb", type=int, default=MEMORY_MB_DEFAULT)
    rep = sub.add_parser("replay", help="replay one input")
    rep.add_argument("--target", required=True)
    rep.add_argument("--seed", type=int, required=True)
    rep.add_argument("--iteration", type=int, required=True)
    rep.add_argument("--dump", help="write the input's bytes to this file")
    child = sub.add_parser("child", help="internal: the bounded child process")
    child.add_argument("--target", required=True)
    child.add_argument("--seed", type=int, required=True)
    child.add_argument("--start", type=int, default=0)
    child.add_argument("--count", type=int, default=None)
    child.add_argument("--seconds", type=float, default=None)
    child.add_argument("--status", required=True)
    child.add_argument("--out", required=True)
    child.add_argument("--memory-mb", type=int, default=MEMORY_MB_DEFAULT)
    child.add_argument("--skip", action="append", default=[], help="origins whose inputs are not run")
    args = ap.parse_args(argv)

    if args.cmd == "child":
        code = child_main(args.target, args.seed, args.start, args.count, args.seconds, args.status, args.out,
                          args.memory_mb, tuple(args.skip))
        # Every input ran and every outcome is written: leave without the interpreter's teardown,
        # which is not under test. A native thread pool torn down at exit aborted a child once
        # (SIGABRT, "terminate called without an active exception", in a loaded CI run) after all
        # 500 inputs had finished, and the parent blamed the last input for it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if args.cmd == "replay":
        target = get_target(args.target)
        outcome, seconds, fail, described = run_input(target, args.seed, args.iteration, dump=args.dump)
        print(f"input: {described}")
        print(f"outcome: {outcome} in {seconds * 1000:.1f} ms")
        if fail is not None:
            print(f"FAILURE {fail.kind}: {fail.message}")
            return 1
        return 0
    iterations = args.iterations if args.iterations is not None or args.seconds is not None else 500
    bad = False
    for name in args.target or TARGET_NAMES:
        timeout = args.timeout or ((args.seconds or 0) + 120 + (iterations or 0) * 0.2)
        result = campaign(name, args.seed, iterations=iterations, seconds=args.seconds, timeout_s=timeout,
                          memory_mb=args.memory_mb)
        print(result.report(), flush=True)
        bad = bad or bool(result.failures)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
