"""The end of a ``ddia-ray`` run that several subcommands share.

A subcommand launches a store, runs its workload, and then, whatever happened, releases the
store (:func:`release`) before printing the summary and the verdict line (:func:`verdict`), so
that a failed run still cleans up and still ends with a verdict a script can read.
"""

from __future__ import annotations

import sys

__all__ = ["release", "verdict"]


def release(store, tmp: str | None) -> None:
    """End a command's run: stop its store (deleting its data when it lived in a temporary root)."""
    import shutil

    if store is not None:
        store.shutdown(destroy_data=tmp is not None)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


def verdict(command: str, what: str, report, summary_lines) -> int:
    """Print a run's summary and return its exit status; a run that did not complete fails."""
    import gc

    gc.collect()  # the clients' loops' leftovers complain on collection: before the summary, not after
    if report is None:
        print(f"ddia-ray {command}: the run did not complete (traceback above), so nothing was checked",
              file=sys.stderr)
        print(f"{what}: FAILED", flush=True)
        return 1
    print("\n".join(summary_lines(report)), flush=True)
    return 0 if report.ok else 1
