"""Runs every transcript in ``tests/raft_transcripts/`` and compares its output exactly.

Each ``*.txt`` file is a readable story of the Raft core (commands, ``----``, the
expected output; see :mod:`raft_transcript`). A mismatch fails with a unified diff
of expected against actual output. After a deliberate change of behaviour, run

    DDIA_REWRITE=1 python -m pytest tests/test_raft_transcripts.py -q

to write the actual outputs back into the files, then read the diff (``git diff
tests/raft_transcripts``) and check every changed block against its comment
before keeping it: a rewrite accepts whatever the core now does.
"""

from __future__ import annotations

import difflib
import os
import pathlib

import pytest

from raft_transcript import TranscriptError, run_transcript

_DIR = pathlib.Path(__file__).parent / "raft_transcripts"
_FILES = sorted(_DIR.glob("*.txt"))
_REWRITE = os.environ.get("DDIA_REWRITE") == "1"


def test_every_feature_has_a_transcript():
    """Each feature of the core has a readable transcript: a reviewer reads the protocol, not just a verdict."""
    names = {p.stem for p in _FILES}
    assert {"election", "prevote", "check_quorum", "replication", "commit_current_term", "snapshot", "membership",
            "transfer", "read_index", "bad_input"} <= names


@pytest.mark.parametrize("path", _FILES, ids=[p.stem for p in _FILES])
def test_transcript(path: pathlib.Path):
    """The core prints exactly what the transcript says (rewrite with DDIA_REWRITE=1)."""
    expected = path.read_text()
    actual = run_transcript(expected, str(path))
    if _REWRITE:
        if actual != expected:
            path.write_text(actual)
        return
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True), actual.splitlines(keepends=True),
                                            fromfile=f"{path.name} (expected)", tofile=f"{path.name} (actual)"))
        pytest.fail(f"transcript {path.name} differs (DDIA_REWRITE=1 rewrites it; check the diff first):\n{diff}",
                    pytrace=False)


def test_a_changed_output_is_reported_as_a_diff():
    """The runner notices a wrong expected output (the comparison can fail)."""
    text = "add-nodes 1\n----\nsomething else\n"
    actual = run_transcript(text)
    assert actual != text
    assert actual.startswith("add-nodes 1\n----\n1: founding voter")


def test_comments_and_blank_lines_survive_a_rewrite():
    """Rewriting only replaces outputs: comments stay where they were."""
    text = "# why\n\nreset\n----\nstale\n\n# more\nreset\n----\nok\n"
    assert run_transcript(text) == "# why\n\nreset\n----\nok\n\n# more\nreset\n----\nok\n"


def test_a_malformed_transcript_is_a_test_error():
    """An unknown command or a missing separator fails loudly, naming the line."""
    with pytest.raises(TranscriptError, match="unknown command"):
        run_transcript("frobnicate\n----\nok\n")
    with pytest.raises(TranscriptError, match="followed by"):
        run_transcript("reset\nok\n")
