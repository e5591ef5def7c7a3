"""Argument value checkers that several ``ddia-ray`` subcommands share.

argparse calls each with the text the user typed; a value out of range raises
:class:`argparse.ArgumentTypeError`, which argparse turns into a usage error naming the option.
Checkers that only one subcommand uses live in that subcommand's module.
"""

from __future__ import annotations

import argparse

__all__ = ["positive_int", "positive_float"]


def positive_int(text: str) -> int:
    """A count: an integer > 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    """A duration in seconds: a finite number > 0."""
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value
