"""The group level: study tables, QC table, growth figures and a report, from outputs only.

Reads what the participant level wrote (volume tables, QC tables, sidecars) and the raw
dataset's participants.tsv / sessions.tsv (sex, and ages the sidecars lack); never an image,
never the network. A scan's label map is written last, so a scan without it is incomplete
and is listed, not counted. Rows are sorted and no time stamp is written, so the output is
the same however the participant level was split into runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bids_infantseg.core.ages import WEEKS_PER_MONTH, AgeLookup, read_tsv
from bids_infantseg.core.qc import (
    BOUNDS_SOURCE,
    FIRST_YEAR_WEEKS,
    age_dependent,
    structure_checks,
    structures_skipped,
    tissue_indices,
    volume_check,
)
from bids_infantseg.io.derivatives import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    atomic_write_tsv,
    write_bidsignore,
)
from bids_infantseg.model.labels import BUILTIN, LabelSet, read_dseg_tsv
from bids_infantseg.report.group import group_report, id_columns
from bids_infantseg.report.outputs import report_path
from bids_infantseg.utils.errors import InfantsegError

LOGGER = logging.getLogger("bids_infantseg")

ID_COLUMNS = ("participant_id", "session_id")
_SEX = {"m": "M", "male": "M", "f": "F", "female": "F", "o": "O", "other": "O"}


class GroupError(InfantsegError):
    """Nothing the group level could summarise; one-line message."""


@dataclass
class Collected:
    """What one label set's outputs hold: complete scans, and what is missing or partial."""

    labels: LabelSet
    scans: list[dict] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (scan or subject, why)


def run_group(args: argparse.Namespace) -> int:
    """Write ``OUTPUT_DIR/group``; missing, unusable or partial outputs are logged and listed
    in the report, not fatal (a study is analysed while stragglers are rerun): 0, or 1 with
    ``--strict`` when anything was listed."""
    out, raw = args.output_dir.resolve(), args.bids_dir.resolve()
    label_tables = sorted(out.glob("desc-*_dseg.tsv"))
    if not label_tables:
        raise GroupError(f"{out} holds no bids_infantseg outputs (no desc-*_dseg.tsv); "
                         "run the participant level first")
    write_bidsignore(out)  # folders written by older versions may lack the group entry
    listed = 0
    for table in label_tables:
        collected = collect(out, raw, _label_set(table))
        if skipped := structures_skipped(collected.labels):
            LOGGER.info("group QC: %s", skipped)
        write_group(out, collected)
        for who, why in collected.problems:
            LOGGER.warning("%s: %s", who, why)
        listed += len(collected.problems)
        LOGGER.info("group: %d scan(s) of %s summarised in %s%s", len(collected.scans),
                    collected.labels.name, out / "group",
                    f"; {len(collected.problems)} missing, unusable or partial listed"
                    if collected.problems else "")
    if listed and getattr(args, "strict", False):
        LOGGER.error("--strict: %d scan(s) or participant(s) missing, unusable or partial "
                     "(listed above and in the group report)", listed)
        return 1
    return 0


def _label_set(path: Path) -> LabelSet:
    """The built-in set of that name (it knows its non-brain labels), else the table's."""
    name = path.name.removeprefix("desc-").removesuffix("_dseg.tsv")
    try:
        return BUILTIN.get(name) or read_dseg_tsv(path, name)
    except (OSError, ValueError, KeyError) as exc:
        why = _first_line(exc).removeprefix(f"{path}: ")
        raise GroupError(f"{path}: unusable label table ({why})") from exc


def _sex(value: str | None) -> str | None:
    text = str(value or "").strip()
    if text.lower() in ("", "n/a", "na", "nan"):
        return None
    return _SEX.get(text.lower(), text)


def collect(out: Path, raw: Path, labels: LabelSet) -> Collected:
    """Every scan with outputs of ``labels``; partial ones and participants without any."""
    name = labels.name
    found = Collected(labels)
    stems: dict[str, Path] = {}
    pattern = re.compile(rf"(sub-[^_]+(?:_[a-z]+-[^_]+)*?)_(?:space-T2w_)?desc-{name}_"
                         r"(?:dseg\.nii\.gz|volumes\.tsv|qc\.tsv)$")
    for path in sorted(out.glob("sub-*/**/anat/*")):
        match = pattern.match(path.name)
        if match:
            stems.setdefault(match.group(1), path.parent)
    lookup = AgeLookup(raw)
    for stem, anat in sorted(stems.items()):
        scan, missing = _read_scan(out, anat, stem, name, labels, lookup)
        if scan is None:
            found.problems.append((stem, "incomplete: " + ", ".join(missing)))
            continue
        if missing:
            found.problems.append((stem, "partial: " + ", ".join(missing)))
        found.scans.append(scan)
    participants = read_tsv(raw / "participants.tsv")
    done = {s["participant_id"] for s in found.scans} | {s.split("_")[0] for s in stems}
    if participants is not None and "participant_id" in participants:
        for pid in sorted(set(participants["participant_id"]) - done):
            found.problems.append((pid, "no outputs"))
    return found


def _read_scan(out: Path, anat: Path, stem: str, name: str, labels: LabelSet,
               lookup: AgeLookup) -> tuple[dict | None, list[str]]:
    """A scan's volumes, age, sex and QC, or None with what is missing or unusable (a
    table that is empty, garbage or lacks labels is as good as missing, never volume 0)."""
    dseg = anat / f"{stem}_space-T2w_desc-{name}_dseg.nii.gz"
    files = {"label map": dseg, "label map sidecar": dseg.with_name(dseg.name[:-7] + ".json"),
             "volume table": anat / f"{stem}_desc-{name}_volumes.tsv",
             "QC table": anat / f"{stem}_desc-{name}_qc.tsv",
             "QC sidecar": anat / f"{stem}_desc-{name}_qc.json"}
    subject = stem.split("_")[0].removeprefix("sub-")
    report = report_path(subject, stem)
    missing = [k for k, p in files.items() if not p.is_file()]
    if not (out / report).is_file():
        missing.append("HTML report")
    readers = {"label map sidecar": _read_json, "QC sidecar": _read_json,
               "volume table": lambda path: read_volume_table(path, labels, f"sub-{subject}")}
    read = {}
    for what, reader in readers.items():
        if what not in missing:
            try:
                read[what] = reader(files[what])
            except UnusableTable as exc:
                missing.append(f"{what} unusable ({files[what].name}: {exc})")
    if "label map" in missing or not {"label map sidecar", "volume table"} <= set(read):
        return None, missing
    sidecar, volumes = read["label map sidecar"], read["volume table"]
    first = volumes.iloc[0]
    entities = {c: str(first[c]) for c in volumes.columns[:list(volumes.columns).index("index")]}
    session = entities.get("session_id") or None
    session = None if session in ("n/a", "") else session
    entities["session_id"] = session
    age_weeks, age_source = _age(sidecar, lookup, subject,
                                 session.removeprefix("ses-") if session else None)
    participant = lookup.participant(subject) or {}
    qc = read["QC sidecar"].get("QC", {}) if "QC sidecar" in read else None
    return {**entities, "age_weeks": age_weeks, "age_source": age_source,
            "sex": _sex(participant.get("sex")), "volumes": volumes, "qc": qc,
            "model": sidecar.get("Model", {}),
            "report": report.as_posix() if (out / report).is_file() else None}, missing


class UnusableTable(ValueError):
    """A participant-level file the group level cannot use; the message says why."""


def _read_json(path: Path) -> dict:
    try:
        content = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise UnusableTable(f"not a JSON file ({_first_line(exc)})") from exc
    if not isinstance(content, dict):
        raise UnusableTable("not a JSON object")
    return content


def _first_line(exc: Exception) -> str:
    return (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).splitlines()[0]


def read_volume_table(path: Path, labels: LabelSet, participant: str) -> pd.DataFrame:
    """A scan's volume table, checked: ids before ``index``, one row per label of the set,
    each volume a number >= 0, all rows of ``participant``; else :class:`UnusableTable`
    saying what is wrong (a table cut to a few rows is not read as zero volumes)."""
    try:
        table = pd.read_csv(path, sep="\t", dtype={c: str for c in ID_COLUMNS},
                            keep_default_na=False)
    except pd.errors.EmptyDataError as exc:
        raise UnusableTable("empty file") from exc
    except (OSError, ValueError) as exc:  # ParserError and UnicodeDecodeError among them
        raise UnusableTable(f"not a TSV table ({_first_line(exc)})") from exc
    absent = [c for c in ("participant_id", "index", "volume_mm3") if c not in table.columns]
    if absent or list(table.columns).index("participant_id") > \
            list(table.columns).index("index"):
        raise UnusableTable(f"not a volume table (no {', '.join(absent)} column)" if absent
                            else "not a volume table (participant_id after index)")
    index = pd.to_numeric(table["index"], errors="coerce")
    volume = pd.to_numeric(table["volume_mm3"], errors="coerce")
    bad = index.isna() | (index % 1 != 0) | ~np.isfinite(volume) | (volume < 0)
    if bad.any():
        row = table[bad].iloc[0]
        raise UnusableTable(f"line {int(bad.to_numpy().argmax()) + 2}: index {row['index']}, "
                            f"volume_mm3 {row['volume_mm3']} (a label index and a volume "
                            ">= 0 expected)")
    expected = [lab.index for lab in labels.labels]
    repeated = sorted(int(i) for i in index[index.duplicated()].unique())
    lacking = sorted(set(expected) - set(index.astype(int)))
    foreign = sorted(set(index.astype(int)) - set(expected))
    if lacking or foreign or repeated:
        why = [f"no row for label(s) {_numbers(lacking)}" if lacking else "",
               f"label(s) {_numbers(foreign)} not in {labels.name}" if foreign else "",
               f"label(s) {_numbers(repeated)} repeated" if repeated else ""]
        raise UnusableTable(f"{len(table)} row(s) for the {len(expected)} labels of "
                            f"{labels.name}: " + "; ".join(w for w in why if w))
    others = sorted(set(table["participant_id"]) - {participant})
    if others:
        raise UnusableTable(f"rows of {', '.join(others)}, not {participant}")
    return table.assign(index=index.astype(int), volume_mm3=volume.astype(float))


def _numbers(values: list[int]) -> str:
    return ", ".join(str(v) for v in values[:10]) + (", ..." if len(values) > 10 else "")


def _age(sidecar: dict, lookup: AgeLookup, subject: str,
         session: str | None) -> tuple[float | None, str | None]:
    """The age the scan was segmented with; else the tables' (an age added since)."""
    recorded = sidecar.get("Age")
    if recorded:
        return float(recorded["Weeks"]), recorded.get("Source")
    source = next(iter(sidecar.get("Sources", [])), "")
    rel_path = source.split(":", 2)[-1] if source.startswith("bids:") else ""
    age = lookup.age(rel_path, subject, session) if rel_path else None
    return (age.weeks, age.source) if age else (None, None)


def wide_table(collected: Collected) -> pd.DataFrame:
    """One row per scan (in ``collected.scans``' order, sorted by name): ids, entities, age,
    sex, intracranial and brain volume, a column per label."""
    labels = collected.labels
    rows = []
    for scan in collected.scans:
        volumes = scan["volumes"].set_index("index")["volume_mm3"].astype(float)
        row = {k: v for k, v in scan.items() if k not in ("volumes", "qc", "model", "report")}
        if row["age_weeks"] is not None:
            row["age_weeks"] = round(row["age_weeks"], 3)
        row["age_months"] = (None if row["age_weeks"] is None else
                             round(row["age_weeks"] / WEEKS_PER_MONTH, 3))
        row["intracranial_volume_mm3"] = round(volumes.reindex(labels.brain_indices).sum(), 3)
        row["brain_volume_mm3"] = round(volumes.reindex(tissue_indices(labels)).sum(), 3)
        for lab in labels.labels:
            if lab.index != 0:
                row[f"{lab.abbreviation}_mm3"] = round(volumes.get(lab.index, float("nan")), 3)
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    front = [c for c in table.columns if c not in ("age_weeks", "age_months", "age_source",
                                                    "sex") and not c.endswith("_mm3")]
    order = front + ["age_weeks", "age_months", "age_source", "sex"]
    return table[order + [c for c in table.columns if c not in order]]


def long_table(wide: pd.DataFrame, labels: LabelSet) -> pd.DataFrame:
    """One row per scan and label: the wide table's label columns stacked."""
    ids = [c for c in wide.columns if not c.endswith("_mm3")]
    rows = []
    for _, scan in wide.iterrows():
        for lab in labels.labels:
            column = f"{lab.abbreviation}_mm3"
            if column in wide.columns:
                rows.append({**scan[ids].to_dict(), "index": lab.index, "name": lab.name,
                             "abbreviation": lab.abbreviation, "volume_mm3": scan[column]})
    return pd.DataFrame(rows)


def qc_table(collected: Collected, wide: pd.DataFrame) -> pd.DataFrame:
    """One row per scan: age-dependent volume checks (brain, structures) redone at the group's
    age, the participant level's other checks, and whether anything was flagged."""
    rows = []
    labels = collected.labels
    for scan, (_, row) in zip(collected.scans, wide.iterrows(), strict=True):
        qc = scan["qc"] or {}
        age = None if pd.isna(row["age_weeks"]) else float(row["age_weeks"])
        brain_ml = row["brain_volume_mm3"] / 1000
        status, flags = volume_check(brain_ml, age)
        volumes = {lab.abbreviation: row.get(f"{lab.abbreviation}_mm3", float("nan")) / 1000
                   for lab in labels.labels if lab.index != 0}
        flags |= structure_checks(volumes, age, labels)[1]
        flags |= {k: v for k, v in (qc.get("flags") or {}).items() if not age_dependent(k)}
        if scan["qc"] is None:
            flags["qc"] = "no QC table from the participant level"
        rows.append({**{c: row[c] for c in id_columns(wide)},
                     "age_weeks": age, "brain_volume_ml": round(brain_ml, 3),
                     "intracranial_volume_ml": round(row["intracranial_volume_mm3"] / 1000, 3),
                     "brain_volume_status": status,
                     "view_dice_mean": qc.get("view_dice_mean"),
                     "mc_samples": qc.get("mc_samples"),
                     "mc_entropy_mean": qc.get("mc_entropy_mean"),
                     "flagged": bool(flags), "flags": "; ".join(flags[k] for k in sorted(flags)),
                     "report": scan["report"]})
    return pd.DataFrame(rows)


def _id_sidecar(ids: list[str]) -> dict:
    """Descriptions of the id columns: participant, session and the source's entities."""
    sidecar = {"participant_id": {"Description": "participant, as in participants.tsv"},
               "session_id": {"Description": "session, as in sessions.tsv (n/a if none)"}}
    for entity in ids:
        sidecar.setdefault(entity, {"Description": f"{entity} entity of the source T2w"})
    return sidecar


def _sidecar(labels: LabelSet, ids: list[str], wide: bool) -> dict:
    sidecar = {
        "Description": ("Label volumes, one row per scan" if wide else
                        "Label volumes, one row per scan and label")
                       + f" ({labels.name}); from the participant level's volume tables.",
        **_id_sidecar(ids),
        "age_weeks": {"Description": "postnatal age at the scan used for segmentation "
                                     "(corrected for preterm birth when the age was given so)",
                      "Units": "weeks"},
        "age_months": {"Description": "age_weeks / 4.345", "Units": "months"},
        "age_source": {"Description": "table and column the age was read from"},
        "sex": {"Description": "sex from participants.tsv (M, F, O)"},
    }
    if wide:
        sidecar["intracranial_volume_mm3"] = {
            "Description": "sum of all brain labels, fluid included", "Units": "mm^3"}
        sidecar["brain_volume_mm3"] = {
            "Description": "sum of brain tissue labels (fluid and ventricles excluded)",
            "Units": "mm^3"}
        for lab in labels.labels:
            if lab.index != 0:
                sidecar[f"{lab.abbreviation}_mm3"] = {"Description": f"volume of {lab.name} "
                                                      f"(index {lab.index})", "Units": "mm^3"}
    else:
        sidecar |= {"index": {"Description": f"label index (desc-{labels.name}_dseg.tsv)"},
                    "name": {"Description": "label name"},
                    "abbreviation": {"Description": "label abbreviation"},
                    "volume_mm3": {"Description": "label volume", "Units": "mm^3"}}
    return sidecar


def _qc_sidecar(ids: list[str]) -> dict:
    return {"Description": "Per-scan quality control; flagged scans deserve a look at their "
                           "report.", **_id_sidecar(ids), **QC_COLUMNS}


QC_COLUMNS = {
    "age_weeks": {"Description": "age used for the volume bounds (brain and structures)",
                  "Units": "weeks"},
    "brain_volume_ml": {"Description": "brain tissue volume", "Units": "mL"},
    "intracranial_volume_ml": {"Description": "all brain labels, fluid included", "Units": "mL"},
    "brain_volume_status": {"Description": "brain volume against age-appropriate bounds; "
                                           "without an age, against the whole first year's "
                                           f"({FIRST_YEAR_WEEKS[0]:g}-{FIRST_YEAR_WEEKS[1]:g} "
                                           "weeks), with an 'age' flag",
                            "Levels": {"ok": "inside", "below": "below the lower bound",
                                       "above": "above the upper bound"},
                            "Bounds": BOUNDS_SOURCE},
    "view_dice_mean": {"Description": "mean Dice between the views' argmax, brain labels"},
    "mc_samples": {"Description": "MC-dropout samples (0: uncertainty not measured)"},
    "mc_entropy_mean": {"Description": "mean normalised MC entropy over brain labels (0-1)"},
    "flagged": {"Description": "true when any check raised a flag"},
    "flags": {"Description": "the flags' messages, separated by '; ': brain or structure "
                             "volume outside its bounds at the age (redone here), structure "
                             "where none can be, views that disagree, ..."},
    "report": {"Description": "the scan's HTML report, relative to the output folder"},
}


def write_group(out: Path, collected: Collected) -> list[Path]:
    """Tables with sidecars, growth figures and the report under ``out/group``."""
    name = collected.labels.name
    folder = out / "group"
    wide = wide_table(collected)
    written = []
    if not wide.empty:
        qc = qc_table(collected, wide)
        ids = id_columns(wide)
        for stem, table, sidecar in (
                (f"desc-{name}_volumes", wide, _sidecar(collected.labels, ids, True)),
                (f"desc-{name}_volumes_long", long_table(wide, collected.labels),
                 _sidecar(collected.labels, ids, False)),
                (f"desc-{name}_qc", qc, _qc_sidecar(ids))):
            written.append(atomic_write_tsv(folder / f"{stem}.tsv", table))
            written.append(atomic_write_json(folder / f"{stem}.json", sidecar))
    else:
        qc = pd.DataFrame()
    models = sorted({json.dumps(s["model"], sort_keys=True) for s in collected.scans})
    page, figures = group_report(labels=collected.labels, wide=wide, qc=qc,
                                 problems=collected.problems,
                                 models=[json.loads(m) for m in models])
    for filename, png in figures.items():
        written.append(atomic_write_bytes(folder / "figures" / filename, png))
    written.append(atomic_write_text(folder / f"desc-{name}_report.html", page))
    return written

