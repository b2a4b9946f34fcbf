"""Postnatal age of each scan, read from the BIDS tables that may record it.

Infant brains change by the week, so models and QC bounds need the age *at the scan*. Labs
record it in different places and units: ``scans.tsv`` (most specific), ``sessions.tsv``,
``participants.tsv`` (least specific); columns ``age_weeks``, ``age_months``, ``age_days``,
``age`` (units from the JSON sidecar, BIDS default years) or dHCP's ``scan_age`` (weeks
post-menstrual). A missing or unreadable age is only a warning: segmentation can go on.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

logger = logging.getLogger("bids_infantseg")

WEEKS_PER_MONTH = 4.345
"""Mean weeks in a month (365.25 / 12 / 7), so months and weeks convert both ways."""

TERM_WEEKS = 40.0
"""Post-menstrual age at term birth: corrected postnatal age = scan_age - 40."""

PLAUSIBLE_WEEKS = (-20.0, 150.0)
"""Postnatal ages (weeks) a scan of this app's subjects can have: from 20 weeks' gestation
(-20, the earliest fetal brain MRI) to ~ 3 years (150), past the first year the models and
QC bounds are made for. Outside: almost always wrong units or a wrong column (e.g. years
read as weeks, a birth year), which would silently skew the age-dependent QC."""

_WEEKS_PER_UNIT = {
    **dict.fromkeys(("d", "day", "days"), 1 / 7),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), 1.0),
    **dict.fromkeys(("mo", "mos", "mon", "month", "months"), WEEKS_PER_MONTH),
    **dict.fromkeys(("y", "yr", "yrs", "year", "years", "a"), 12 * WEEKS_PER_MONTH),
}

# Column -> fixed units, in the order they are trusted; "age" takes its units from the sidecar.
_FIXED_COLUMNS = {"age_weeks": "weeks", "age_months": "months", "age_days": "days"}
_MISSING = {"", "n/a", "na", "nan"}


@dataclass(frozen=True)
class Age:
    """Postnatal age in weeks, and where it was read (e.g. ``sessions.tsv:age_months``)."""

    weeks: float
    source: str

    @property
    def months(self) -> float:
        return self.weeks / WEEKS_PER_MONTH


def implausible_age(age: Age) -> str | None:
    """A sentence when ``age`` is outside ``PLAUSIBLE_WEEKS``, else None."""
    low, high = PLAUSIBLE_WEEKS
    if low <= age.weeks <= high:
        return None
    years = f" = {age.weeks / (12 * WEEKS_PER_MONTH):.3g} years" if abs(age.weeks) >= 104 else ""
    return (f"age {age.weeks:.1f} weeks postnatal{years} (from {age.source}) is outside "
            f"{low:g} to {high:g} weeks: check the age's column and units")


def weeks_per_unit(units: str) -> float:
    """Weeks in one ``units`` (singular, plural or abbreviated); ValueError if unknown."""
    key = units.strip().lower().rstrip(".")
    if key not in _WEEKS_PER_UNIT:
        raise ValueError(f"unknown age units {units!r}")
    return _WEEKS_PER_UNIT[key]


def read_tsv(path: Path) -> pd.DataFrame | None:
    """A BIDS TSV as strings (``n/a`` kept as text), or None when the file does not exist."""
    if not path.is_file():
        return None
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def _sidecar_units(sidecars: list[Path]) -> str | None:
    """Units of the ``age`` column from the first sidecar that gives them."""
    for sidecar in sidecars:
        if not sidecar.is_file():
            continue
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError) as err:
            logger.warning("cannot read %s (%s); ignoring it", sidecar, err)
            continue
        units = meta.get("age", {}).get("Units") if isinstance(meta, dict) else None
        if isinstance(units, str):
            return units
    return None


def _number(text: str) -> float | None:
    """A finite float, None for BIDS missing values; ValueError for anything else."""
    if text.strip().lower() in _MISSING:
        return None
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def age_from_row(row: dict[str, str], *, table: str, age_units: str | None) -> Age | None:
    """The age in one TSV row, trying the columns from the most to the least explicit.

    A value that cannot be read is logged and the next column is tried.
    """
    candidates: list[tuple[str, str | None]] = list(_FIXED_COLUMNS.items())
    candidates += [("age", age_units or "years"), ("scan_age", None)]
    for column, units in candidates:
        if column not in row:
            continue
        try:
            value = _number(row[column])
            if value is None:
                continue
            if units is None:  # scan_age: post-menstrual weeks
                return Age(value - TERM_WEEKS, f"{table}:{column} (post-menstrual weeks - 40)")
            return Age(value * weeks_per_unit(units), f"{table}:{column}")
        except ValueError as err:
            logger.warning("%s: cannot read age %r from column %r (%s)",
                           table, row[column], column, err)
    return None


class AgeLookup:
    """Finds the age of scans in one dataset, reading each table once."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tables: dict[Path, pd.DataFrame | None] = {}

    def _table(self, path: Path) -> pd.DataFrame | None:
        if path not in self._tables:
            try:
                self._tables[path] = read_tsv(path)
            except (OSError, ValueError, pd.errors.ParserError) as err:
                logger.warning("cannot read %s (%s); ignoring it", path, err)
                self._tables[path] = None
        return self._tables[path]

    def _row(self, path: Path, column: str, value: str) -> dict[str, str] | None:
        table = self._table(path)
        if table is None or column not in table.columns:
            return None
        rows = table[table[column] == value]
        return None if rows.empty else rows.iloc[0].to_dict()

    def participant(self, subject: str) -> dict[str, str] | None:
        """The participants.tsv row of ``subject`` (label without ``sub-``)."""
        return self._row(self.root / "participants.tsv", "participant_id", f"sub-{subject}")

    def age(self, rel_path: str, subject: str, session: str | None) -> Age | None:
        """Age at the scan ``rel_path`` (posix, relative to the dataset), most specific first."""
        sub_dir = self.root / f"sub-{subject}"
        prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "")
        scans_dir = sub_dir / f"ses-{session}" if session else sub_dir
        scans_tsv = scans_dir / f"{prefix}_scans.tsv"
        in_scans = PurePosixPath(rel_path).relative_to(scans_dir.relative_to(self.root).as_posix())
        lookups = [
            (scans_tsv, "filename", in_scans.as_posix(), "scans.tsv",
             [scans_tsv.with_suffix(".json"), self.root / "scans.json"]),
        ]
        if session:
            sessions_tsv = sub_dir / f"sub-{subject}_sessions.tsv"
            lookups.append((sessions_tsv, "session_id", f"ses-{session}", "sessions.tsv",
                            [sessions_tsv.with_suffix(".json"), self.root / "sessions.json"]))
        lookups.append((self.root / "participants.tsv", "participant_id", f"sub-{subject}",
                        "participants.tsv", [self.root / "participants.json"]))
        for tsv, column, value, name, sidecars in lookups:
            row = self._row(tsv, column, value)
            if row is None:
                continue
            found = age_from_row(row, table=name, age_units=_sidecar_units(sidecars))
            if found is not None:
                return found
        logger.warning("no age found for %s in scans.tsv, sessions.tsv or participants.tsv",
                       rel_path)
        return None
