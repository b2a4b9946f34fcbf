"""Regenerate QC's per-structure volume bounds by age from real label maps.

    python benchmarks/qc_volume_bounds.py --aseg-root ../shared/data/infant-aseg-labels \
        --fetal-root ../shared/data/fetal-sb-atlas-cc0 \
        [--out bids_infantseg/data/qc/drawem9_volume_bounds.tsv]

Writes the table QC reads (``label, age_months, low_ml, high_ml, source``; ``age_months``
postnatal, negative before term, as the participant level's ages) and prints the points it
was fitted to. The label maps stay where they are (not in the repository); the table is.

Points (one individual or one population average per age, so n = 1 per age):

- 11 FreeSurfer aseg maps of real infants at 1-8, 12, 24 and 34-38 months (DCAN Labs,
  BIBSnet; joint label fusion; README of the folder), mapped to DrawEM9 by the shipped
  ``freesurfer-aseg`` synthesis scheme (``synth.classes.GEN_TO_DRAWEM9``), as
  ``benchmarks/mit_templates.py`` does; 34-38 months is taken as 36. Infants are taken as
  born at term: post-menstrual age = 40 weeks + months x 4.345.
- 15 CC0 fetal spina bifida atlases, gestational age 21-34 weeks (Fidon et al. 2021):
  1 WM, 8 corpus callosum -> WM, 2 intra-axial CSF -> ventricles, 3 cerebellum,
  5 cortical GM, 6 deep GM, 7 brainstem (4 extra-axial CSF unused, see below).

Per label (``Cbm``, ``dGM``, ``BS``, ``WM``, ``cGM``): a Gompertz growth curve,
log V = a - b exp(-c (PMA - 40) / 52), fitted by least squares to the log volumes of all 26
points; bounds = curve / k and curve x k, k = max(1.5 or 2, exp(3 x RMS of the log residuals)): a
generous margin, because each age is one brain, the asegs are automatic and the fetal
atlases are averages of a pathology. The split between cortex and white matter is the least
certain: automatic asegs label a thick cortex (about half of the brain; DrawEM-style maps a
thinner one), so ``cGM``'s lower bound comes from a second curve fitted to the asegs' cortex
capped at the thinnest thickness the synthesis uses (1.8 mm at birth, +0.8 mm over the first
year; cortex deeper than that from the white matter not counted), and ``WM``'s upper bound
from a curve through WM plus that cut-off cortex.

``Ven`` and ``Hip`` follow the brain-tissue curve at the asegs' median share of brain tissue,
k from the spread of that share and of the tissue fit: the fetal atlases have no hippocampus,
and their ventricles are enlarged (spina bifida), so they would set a wrong trend.

``brain`` (tissue: cGM + WM + Cbm + dGM + BS + Hip) keeps the literature ranges QC used before
(-10..52 postnatal weeks; ``qc.py`` history), which rest on many more brains; below and above
them the nearest range is scaled by the fitted tissue curve's growth.

Not bounded: ``CSF`` and ``Bkg`` (non-brain head tissue). The asegs are brain-only maps (label
24 is a few mL), the fetal atlases' extra-axial CSF is a pathology (collapsed before the
repair: 4 mL at 25 weeks not operated, 24 mL operated), and both volumes depend mostly on the
field of view and skull-stripping of the scan (a skull-stripped template has almost none).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.optimize import curve_fit

from bids_infantseg.core.ages import WEEKS_PER_MONTH
from bids_infantseg.model.labels import DRAWEM9
from bids_infantseg.synth.classes import GEN_TO_DRAWEM9
from bids_infantseg.synth.labelmaps import Scheme

OUT = Path(__file__).resolve().parents[1] / "bids_infantseg" / "data" / "qc" / \
    "drawem9_volume_bounds.tsv"
ABBR = [lab.abbreviation for lab in DRAWEM9.labels]
TISSUE = ("cGM", "WM", "Cbm", "dGM", "BS", "Hip")
FETAL_TO_DRAWEM9 = np.array([0, 3, 5, 6, 1, 2, 7, 8, 3])
"""Fetal atlas label -> DrawEM9 (4 extra-axial CSF -> 1, unused)."""
K_MIN = {"cGM": 1.5, "WM": 1.5, "Cbm": 1.5}
"""Least margin: x/ 1.5 for the large structures, 2 for the small ones (Ven, dGM, BS, Hip),
whose definitions differ most between protocols (aseg ventral DC counted as deep GM here)."""
K_SMALL = 2.0
K_SD = 3.0
CORTEX_MM, CORTEX_GROWTH_MM = 1.8, 0.8
LITERATURE_WEEKS = (
    # postnatal weeks, lower, upper: QC's brain-tissue ranges before this table (Knickmeyer
    # 2008, Holland 2014, dHCP preterm cohort; each widened ~15 % either side)
    (-10.0, 150.0, 350.0), (0.0, 300.0, 630.0), (13.0, 450.0, 850.0),
    (26.0, 560.0, 1000.0), (39.0, 630.0, 1100.0), (52.0, 680.0, 1150.0),
)
GA_WEEKS = (20, 22, 24, 26, 28, 30, 32, 34, 36, 38)
MONTHS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 18, 24, 30, 36)
ASEG = "11 aseg maps 1-38 mo (DCAN Labs BIBSnet, JLF)"
FETAL = "15 fetal SB atlases GA21-34 (Fidon 2021)"


def aseg_points(root: Path) -> pd.DataFrame:
    """DrawEM9 volumes (mL) of every aseg map, full and with the cortex capped."""
    scheme = Scheme.load("freesurfer-aseg")
    rows = []
    for path in sorted(root.glob("*_aseg.nii.gz")):
        name = path.name.removesuffix("_aseg.nii.gz")
        months = 36.0 if "-" in name else float(name.removesuffix("mo"))
        img = nib.load(path)
        raw = np.asarray(img.dataobj).astype(np.int64)
        drawem = GEN_TO_DRAWEM9[scheme.lookup(int(raw.max()))[raw]]
        zooms = np.array(img.header.get_zooms()[:3], float)
        row = _volumes(drawem, zooms)
        cortex = drawem == 2
        depth = ndimage.distance_transform_edt(~(drawem > 0) | cortex, sampling=zooms)
        cap = CORTEX_MM + CORTEX_GROWTH_MM * min(months, 12.0) / 12.0
        row["cGM_thin"] = float((cortex & (depth <= cap)).sum() * zooms.prod() / 1000)
        rows.append({"map": f"aseg {name}", "source": "aseg", "age_months": months,
                     "pma_weeks": 40 + months * WEEKS_PER_MONTH, **row})
    return pd.DataFrame(rows)


def fetal_points(root: Path) -> pd.DataFrame:
    rows = []
    for folder in sorted(root.glob("fetal_SB_atlas_GA*")):
        ga = float(folder.name.split("GA")[1][:2])
        img = nib.load(folder / "parcellation.nii.gz")
        drawem = FETAL_TO_DRAWEM9[np.asarray(img.dataobj).astype(np.int64)]
        row = _volumes(drawem, np.array(img.header.get_zooms()[:3], float))
        row["cGM_thin"] = row["cGM"]  # a population average: its cortex is already thin
        row["Hip"] = float("nan")  # no hippocampus label
        rows.append({"map": folder.name.removeprefix("fetal_SB_atlas_"), "source": "fetal",
                     "age_months": (ga - 40) / WEEKS_PER_MONTH, "pma_weeks": ga, **row})
    return pd.DataFrame(rows)


def _volumes(drawem: np.ndarray, zooms: np.ndarray) -> dict[str, float]:
    counts = np.bincount(drawem.ravel(), minlength=len(ABBR)) * zooms.prod() / 1000
    row = {a: float(c) for a, c in zip(ABBR, counts, strict=True) if a not in ("UNK", "Bkg")}
    row["brain"] = sum(row[a] for a in TISSUE)
    return row


def _gompertz(pma: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.exp(-c * (pma - 40.0) / 52.0)


def fit(pma: np.ndarray, volume: np.ndarray) -> tuple[np.ndarray, float]:
    """Gompertz parameters of log volume against post-menstrual age, and the RMS residual."""
    y = np.log(volume)
    params, _ = curve_fit(_gompertz, pma, y, p0=(y.max(), 1.0, 2.0), maxfev=20000)
    return params, float(np.sqrt(np.mean((y - _gompertz(pma, *params)) ** 2)))


def margin(rms: float, label: str) -> float:
    return max(K_MIN.get(label, K_SMALL), float(np.exp(K_SD * rms)))


def table(points: pd.DataFrame) -> pd.DataFrame:
    grid = np.array([*GA_WEEKS, *(40 + m * WEEKS_PER_MONTH for m in MONTHS)], float)
    months = (grid - 40) / WEEKS_PER_MONTH
    pma = points["pma_weeks"].to_numpy()
    rows = []

    def add(label: str, low: np.ndarray, high: np.ndarray, source: str,
            ages: np.ndarray = months) -> None:
        for age, lo, hi in zip(ages, low, high, strict=True):
            rows.append({"label": label, "age_months": round(float(age), 4),
                         "low_ml": round(float(lo), 1), "high_ml": round(float(hi), 1),
                         "source": source})

    tissue, tissue_rms = fit(pma, points["brain"].to_numpy())
    for label in ("cGM", "WM", "Cbm", "dGM", "BS"):
        params, rms = fit(pma, points[label].to_numpy())
        k = margin(rms, label)
        curve = np.exp(_gompertz(grid, *params))
        low, high, note = curve / k, curve * k, ""
        if label == "cGM":  # thick automatic cortex: the lower bound from the capped cortex
            thin, thin_rms = fit(pma, points["cGM_thin"].to_numpy())
            low = np.exp(_gompertz(grid, *thin)) / margin(thin_rms, label)
            note = (f"; low: cortex capped at {CORTEX_MM:g} mm (+{CORTEX_GROWTH_MM:g} mm "
                    f"in year 1), / {margin(thin_rms, label):.2f}")
        if label == "WM":  # ... and the upper bound with the cortex beyond the cap as WM
            thick = points["WM"] + points["cGM"] - points["cGM_thin"]
            wide, wide_rms = fit(pma, thick.to_numpy())
            high = np.exp(_gompertz(grid, *wide)) * margin(wide_rms, label)
            note = (f"; high: WM + the cortex beyond a {CORTEX_MM:g} mm cap, "
                    f"x {margin(wide_rms, label):.2f}")
        extra = ("; fetal SB cerebellum small (Chiari II): low lenient before term"
                 if label == "Cbm" else "")
        least = K_MIN.get(label, K_SMALL)
        add(label, low, high, f"Gompertz fit of log mL vs PMA, {ASEG} + {FETAL}; "
            f"x/ {k:.2f} (3 x RMS log residual {rms:.2f}, min {least:g}){note}{extra}")
    aseg = points[points["source"] == "aseg"]
    for label in ("Ven", "Hip"):
        share = aseg[label] / aseg["brain"]
        spread = float(np.sqrt(np.mean(np.log(share / share.median()) ** 2) + tissue_rms ** 2))
        k = margin(spread, label)
        curve = share.median() * np.exp(_gompertz(grid, *tissue))
        why = ("fetal SB ventricles enlarged, not used" if label == "Ven"
               else "fetal atlases have no hippocampus")
        add(label, curve / k, curve * k,
            f"{share.median():.2%} of the tissue Gompertz fit ({ASEG} + {FETAL}), median share "
            f"in the asegs ({why}); x/ {k:.2f} (3 x RMS log of share and fit {spread:.2f})")
    weeks = np.array([w for w, _, _ in LITERATURE_WEEKS])
    lit_low = np.array([lo for _, lo, _ in LITERATURE_WEEKS])
    lit_high = np.array([hi for _, _, hi in LITERATURE_WEEKS])
    add("brain", lit_low, lit_high, "literature: ~200-250 mL at 30-32 wk PMA (dHCP), "
        "350-550 mL at term to 800-1000 mL at 12 mo (Knickmeyer 2008, Holland 2014), "
        "widened ~15% either side; linear between ages", weeks / WEEKS_PER_MONTH)
    for ages, anchor in ((grid[grid < 39 + weeks[0]], 0), (grid[grid > 41 + weeks[-1]], -1)):
        growth = np.exp(_gompertz(ages, *tissue) - _gompertz(40 + weeks[anchor], *tissue))
        add("brain", lit_low[anchor] * growth, lit_high[anchor] * growth,
            f"literature range at {weeks[anchor]:g} weeks scaled by the tissue Gompertz fit's "
            f"growth ({ASEG} + {FETAL})", (ages - 40) / WEEKS_PER_MONTH)
    out = pd.DataFrame(rows)
    order = {label: i for i, label in enumerate(("brain", "cGM", "WM", "Ven", "Cbm", "dGM",
                                                  "BS", "Hip"))}
    return out.sort_values(["label", "age_months"], key=lambda s: s.map(order)
                           if s.name == "label" else s, kind="stable").reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aseg-root", type=Path, required=True)
    parser.add_argument("--fetal-root", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    points = pd.concat([fetal_points(args.fetal_root), aseg_points(args.aseg_root)],
                       ignore_index=True)
    shown = ["map", "age_months", "cGM", "cGM_thin", "WM", "Ven", "Cbm", "dGM", "BS", "Hip",
             "brain"]
    print(points[shown].round(1).to_string(index=False))
    bounds = table(points)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bounds.to_csv(args.out, sep="\t", index=False)
    print(f"wrote {len(bounds)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
