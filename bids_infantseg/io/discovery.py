"""BIDS input: which T2w scans to segment, with their entities, age and sex.

The only module that imports PyBIDS, so the rest of the package deals in plain ``Scan``
records; what outputs are called is :mod:`bids_infantseg.io.naming`'s job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bids import BIDSLayout, BIDSLayoutIndexer
from bids.layout import Query

from bids_infantseg.core.ages import Age, AgeLookup
from bids_infantseg.io.naming import ENTITY_NAMES, ENTITY_PATTERN, format_entities, parse_entities
from bids_infantseg.utils.errors import InfantsegError

logger = logging.getLogger("bids_infantseg")

T2W_QUERY: dict[str, Any] = {"datatype": "anat", "suffix": "T2w",
                             "extension": [".nii", ".nii.gz"]}
FILTER_QUERIES = ("t2w",)
"""Queries a ``--bids-filter-file`` may hold (fMRIPrep's format, one entry per input type)."""

# PyBIDS' default ignores, which passing ``ignore`` replaces (dot-files are always ignored).
DEFAULT_IGNORED = ("code", "derivatives", "models", "sourcedata", "stimuli")

SPACE_T2W = re.compile(rf"^/sub-[^/]+/(?:ses-[^/]+/)?anat/sub-[0-9a-zA-Z+]+(?:{ENTITY_PATTERN})*"
                       rf"_space-[0-9a-zA-Z+]+(?:{ENTITY_PATTERN})*_T2w\.nii(?:\.gz)?$")
"""A T2w named with a ``space`` (resampled; Baby Open Brains ships its scans as
``sub-X_ses-Y_space-INFANTMNIacpc_T2w``): BIDS validation rejects it in raw data, so the train
level indexes it explicitly (``discover(with_space=True)``)."""


class DiscoveryError(InfantsegError):
    """The dataset or the selection cannot give any scan to segment; one-line message."""


class FilterFileError(InfantsegError):
    """A ``--bids-filter-file`` (or its parsed content) is unusable; one-line message."""


@dataclass(frozen=True)
class Scan:
    """One T2w image to segment, with what the outputs need to know about it."""

    path: Path
    root: Path
    entities: dict[str, str] = field(hash=False)
    age: Age | None = None
    sex: str | None = None

    @property
    def subject(self) -> str:
        return self.entities["subject"]

    @property
    def session(self) -> str | None:
        return self.entities.get("session")

    @property
    def source_stem(self) -> str:
        """Every entity of the input name in BIDS order, e.g. ``sub-01_ses-02_run-1``."""
        return format_entities(self.entities)

    @property
    def rel_path(self) -> str:
        """Posix path inside the dataset, as BIDS URIs and ``scans.tsv`` write it."""
        return self.path.relative_to(self.root).as_posix()


def load_filter_file(path: Path) -> dict[str, dict[str, Any]]:
    """Read a ``--bids-filter-file`` (``{"t2w": {entity: value | [values] | null}}``)."""
    path = Path(path)
    try:
        filters = json.loads(path.read_text())
    except OSError as err:
        raise FilterFileError(f"cannot read BIDS filter file {path}: {err.strerror}") from err
    except json.JSONDecodeError as err:
        raise FilterFileError(f"BIDS filter file {path} is not valid JSON: {err}") from err
    try:
        _t2w_query(filters)
    except FilterFileError as err:
        raise FilterFileError(f"BIDS filter file {path}: {err}") from err
    return filters


def _t2w_query(filters: Any) -> dict[str, Any]:
    """The PyBIDS query for T2w images, after checking the filters' shape and names."""
    if not filters:
        return dict(T2W_QUERY)
    if not isinstance(filters, dict):
        raise FilterFileError("filters must be a JSON object like {\"t2w\": {...}}")
    unknown = sorted(set(filters) - set(FILTER_QUERIES))
    if unknown:
        raise FilterFileError(f"unknown filter queries {unknown}; known: {list(FILTER_QUERIES)}")
    t2w = filters.get("t2w", {})
    if not isinstance(t2w, dict):
        raise FilterFileError("the 't2w' filter must be an object mapping entities to values")
    query = dict(T2W_QUERY)
    for name, value in t2w.items():
        if name in ("subject", "session"):
            option = "--participant-label" if name == "subject" else "--session-label"
            raise FilterFileError(f"select the {name} with {option}, not in the filter file")
        if name not in ENTITY_NAMES and name not in T2W_QUERY:
            raise FilterFileError(f"unknown entity {name!r} in the 't2w' filter "
                                 "(use long names, e.g. 'acquisition', 'reconstruction')")
        query[name] = _query_value(value)
    return query


def _query_value(value: Any) -> Any:
    """fMRIPrep conventions: null means 'entity absent', '*' means 'any value'."""
    if value is None:
        return Query.NONE
    if value == "*":
        return Query.ANY
    if isinstance(value, list):
        return [_query_value(v) for v in value]
    return value


def _strip_prefix(labels: Iterable[str] | None, prefix: str) -> list[str] | None:
    if labels is None:
        return None
    return [label.removeprefix(prefix) for label in labels]


def _inside(path: Path | None, root: Path) -> str | None:
    """``path`` relative to ``root`` (posix) when it lies strictly inside it, else None."""
    if path is None:
        return None
    resolved = Path(path).resolve()
    if resolved == root or root not in resolved.parents:
        return None
    return resolved.relative_to(root).as_posix()


def _ignore_patterns(root: Path, extra: Iterable[Path | None]) -> list[re.Pattern[str]]:
    folders = list(DEFAULT_IGNORED)
    folders += [rel for rel in (_inside(path, root) for path in extra) if rel]
    return [re.compile(rf"^/{re.escape(folder)}(/|$)") for folder in sorted(set(folders))]


def _fingerprint(root: Path) -> list[tuple[str, int]]:
    """Folders whose listing decides what is indexed, with their modification times.

    Adding or removing a subject, session or image changes a name or a time here, so a cached
    index is never used after the dataset gained or lost files. The root's own time is left
    out: output and work folders inside the dataset change it on every run.
    """
    folders = [*root.glob("sub-*"), *root.glob("sub-*/ses-*"),
               *root.glob("sub-*/anat"), *root.glob("sub-*/ses-*/anat")]
    return sorted((p.relative_to(root).as_posix(), p.stat().st_mtime_ns)
                  for p in folders if p.is_dir())


def _layout(root: Path, ignore: list[re.Pattern[str]], work_dir: Path | None,
            force: list[re.Pattern[str]]) -> BIDSLayout:
    """Index the dataset, reusing an index cached under ``work_dir/bids_db``; files matching
    ``force`` are indexed although validation rejects them.

    The cache key covers the dataset path, the ignore and force rules and the folder
    fingerprint. A new index is built in a private folder and renamed into place, so parallel
    participant jobs sharing one work directory never read a half-written database.
    """

    def indexer() -> BIDSLayoutIndexer:
        return BIDSLayoutIndexer(validate=True, ignore=ignore, force_index=force,
                                 index_metadata=False)

    if work_dir is None:
        return BIDSLayout(root, indexer=indexer())
    key_source = json.dumps([str(root), [p.pattern for p in ignore],
                             [p.pattern for p in force], _fingerprint(root)])
    db_root = Path(work_dir) / "bids_db"
    database = db_root / hashlib.sha256(key_source.encode()).hexdigest()[:16]
    if not database.is_dir():
        db_root.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{database.name}-", dir=db_root))
        BIDSLayout(root, indexer=indexer(), database_path=building)
        try:
            os.rename(building, database)
        except OSError:  # another job finished first; its index is as good as ours
            shutil.rmtree(building, ignore_errors=True)
        logger.info("indexed %s into %s", root, database)
    else:
        logger.info("reusing the BIDS index in %s", database)
    return BIDSLayout(database_path=database)


def _sex(row: Mapping[str, str] | None) -> str | None:
    """``sex`` from participants.tsv in BIDS' short form (M, F, O) when recognisable."""
    if row is None:
        return None
    value = str(row.get("sex", "")).strip()
    if value.lower() in ("", "n/a", "na", "nan"):
        return None
    return {"m": "M", "male": "M", "f": "F", "female": "F", "o": "O", "other": "O"}.get(
        value.lower(), value)


def discover(
    bids_dir: Path,
    *,
    output_dir: Path | None = None,
    work_dir: Path | None = None,
    participant_labels: Iterable[str] | None = None,
    session_labels: Iterable[str] | None = None,
    bids_filters: Mapping[str, Any] | None = None,
    with_space: bool = False,
) -> list[Scan]:
    """Every T2w image to segment, sorted by path; DiscoveryError when there is none.
    ``with_space`` also finds T2w images named with a ``space`` (:data:`SPACE_T2W`)."""
    root = Path(bids_dir).resolve()
    if not (root / "dataset_description.json").is_file():
        raise DiscoveryError(f"{bids_dir} is not a BIDS dataset (no dataset_description.json)")
    query = _t2w_query(dict(bids_filters) if bids_filters else None)
    layout = _layout(root, _ignore_patterns(root, (output_dir, work_dir)), work_dir,
                     [SPACE_T2W] if with_space else [])

    existing = sorted(layout.get_subjects())
    subjects = _strip_prefix(participant_labels, "sub-") or existing
    missing = sorted(set(subjects) - set(existing))
    if missing:
        raise DiscoveryError(f"no subject {', '.join(missing)} in {bids_dir}; "
                             f"subjects: {', '.join(existing) or 'none'}")
    sessions = _strip_prefix(session_labels, "ses-")
    if sessions:
        known = set(layout.get_sessions(subject=subjects))
        unknown = sorted(set(sessions) - known)
        if unknown:
            raise DiscoveryError(f"no session {', '.join(unknown)} for the selected subjects; "
                                 f"sessions: {', '.join(sorted(known)) or 'none'}")
        query["session"] = sessions

    lookup = AgeLookup(root)
    scans: list[Scan] = []
    for subject in subjects:
        files = sorted(f.path for f in layout.get(subject=subject, **query))
        if not files:
            logger.warning("sub-%s has no T2w image matching the selection; skipping it", subject)
            continue
        sex = _sex(lookup.participant(subject))
        for file in files:
            path = Path(file)
            entities = parse_entities(path.name)
            rel_path = path.relative_to(root).as_posix()
            age = lookup.age(rel_path, subject, entities.get("session"))
            scans.append(Scan(path, root, entities, age, sex))
            logger.info("T2w %s (age %s)", rel_path,
                        f"{age.weeks:.1f} weeks from {age.source}" if age else "unknown")
    if not scans:
        raise DiscoveryError(f"no T2w image in {bids_dir} matches the selection")
    return scans
