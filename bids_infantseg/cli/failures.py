"""Turn Nipype crash files into one line per failed scan.

Nipype writes a text crash file per failed node (``Node: <workflow>.<scan wf>.<node>``
followed by the traceback); the scan is the sub-workflow, the reason the exception's line.
"""

from __future__ import annotations

import re
from pathlib import Path

_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+(?:Error|Exception)|[\w.]+Exit): (.+)$")


def crash_reason(text: str) -> str:
    """The last exception message in a traceback (the innermost cause)."""
    reasons = [m.group(1).strip() for line in text.splitlines()
               if (m := _EXCEPTION_LINE.match(line.strip()))]
    return reasons[-1] if reasons else "failed (no exception message in the crash file)"


def scan_failures(crash_dir: Path, scan_wf_names: set[str],
                  ignore: set[str] = frozenset()) -> dict[str, str]:
    """``{scan workflow name: "<node>: <reason> (crash file ...)"}`` for this run's crashes."""
    failures: dict[str, str] = {}
    if not crash_dir.exists():
        return failures
    for crash in sorted(crash_dir.glob("crash-*.txt")):
        if crash.name in ignore:
            continue
        text = crash.read_text(errors="replace")
        header = re.search(r"^Node: (\S+)", text, re.MULTILINE)
        parts = header.group(1).split(".") if header else []
        scan = next((p for p in parts if p in scan_wf_names), None)
        if scan is not None and scan not in failures:
            failures[scan] = f"{parts[-1]} step failed: {crash_reason(text)} (details: {crash})"
    return failures
