"""README.md and docs/*.md describe the product as it is, not how the work went.

History belongs in commit messages and in the dated results table of
docs/benchmarks.md. These checks refuse numbered work periods, issue and pull
request numbers, commit hashes, references to notes that are not in the
repository, and diary phrases; each pattern is tested below on text it must
flag and on legitimate text it must leave alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

_HEX_TOKEN = re.compile(r"(?<![\w./:-])[0-9a-f]{7,40}(?![\w/-])")
_HASH_CONTEXT = re.compile(r"hash|sha|digest|checksum|fingerprint|token|nonce|uuid", re.I)

RULES: dict[str, re.Pattern[str]] = {
    "a numbered work period": re.compile(
        r"\b(?:sessions?|sprints?|iterations?|milestones?|work periods?)\s+#?\d+\b"
        r"|\b(?:in|during|since|after|before|until|from)\s+phases?\s+\d+\b"
        r"|\bphase\s+\d+'s\b",
        re.I,
    ),
    "an issue or pull request number": re.compile(
        r"(?<![\w&])#\d+\b|\b(?:issues?|tickets?|PRs?|pull requests?|bugs?)\s+#?\d+\b", re.I
    ),
    "a note outside the repository": re.compile(
        r"\b(?:ENGINE-NOTES|OPS-NOTES|ARCHITECTURE|STYLE)\.md\b|\b(?:ENGINE|OPS)-NOTES\b"
    ),
    "a diary phrase": re.compile(
        r"\b(?:earlier|previous|last|this|next|prior|later|an? (?:earlier|later))\s+"
        r"(?:sessions?|sprints?|iterations?|work periods?)\b"
        r"|\bbefore/after\b|\bwas [^.;,\n]{1,40}, now\b"
        r"|\b(?:we|I) (?:fixed|added|changed|removed|rewrote|found)\b",
        re.I,
    ),
}


def findings(text: str) -> list[str]:
    """`rule: line` for every line of `text` that tells how the work went."""
    found = []
    for line in text.splitlines():
        for rule, pattern in RULES.items():
            if pattern.search(line):
                found.append(f"{rule}: {line.strip()}")
        if not _HASH_CONTEXT.search(line):
            for token in _HEX_TOKEN.findall(line):
                if re.search(r"\d", token) and re.search(r"[a-f]", token):
                    found.append(f"a commit hash ({token}): {line.strip()}")
    return found


@pytest.mark.parametrize("path", DOCS, ids=lambda path: path.name)
def test_the_docs_describe_the_product(path: Path) -> None:
    assert findings(path.read_text()) == []


@pytest.mark.parametrize(
    "text",
    [
        "Session 4 measured 21 ms.",
        "In sprint 2 the client learned to retry.",
        "since phase 3 the gateway batches",
        "as issue 12 asks",
        "see #12",
        "Fixed by PR 31.",
        "Measured at 3f2a9c1 on a quiet machine.",
        "(commit 1a2b3c4d5e6f)",
        "as ENGINE-NOTES.md says",
        "see ARCHITECTURE.md",
        "an earlier session's runs",
        "the before/after table",
        "p99 was 120 ms, now 60 ms",
        "We fixed the leak.",
    ],
)
def test_how_the_work_went_is_flagged(text: str) -> None:
    assert findings(text)


@pytest.mark.parametrize(
    "text",
    [
        "# ironbook",
        "## How it works",
        "The latency phase runs 20 s; each throughput phase 10 s.",
        "Six rounds of three phases, every other round in reverse.",
        '`"state_hash": "9f86d081884c7d65"` at every snapshot',
        "the state hash 3f2a9c1b4e matches on every replica",
        "a UUID such as 0c4f1e2ab3",
        "`ironbook bench odds --json --seconds 10`",
        "HTTP 409 with the code `duplicate_request`",
        "see [the API](api.md#errors)",
        "2026-12-02 | 0.871 | `ironbook bench odds --json`",
        "The architecture has four layers.",
        "a replica that is fenced stops serving at once",
        "colour #1f77b4 in the chart",
        "`9f86d081884c7d65f3a1c2b4e5d6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4` on every replica",
        "a 0x7fa3c2e1 address",
    ],
)
def test_the_product_is_not_flagged(text: str) -> None:
    assert findings(text) == []
