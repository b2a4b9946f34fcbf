"""Write the real infant label maps the demo draws its scans from (``bids_infantseg/data/demo``).

    python scripts/make_demo_labelmaps.py ../shared/data/infant-aseg-labels

Why a script: the shipped files are derived, not copied, and anyone can check or redo that.
Each map is cropped to the brain's bounding box plus ``MARGIN`` voxels (its affine moved to
match, so the anatomy keeps its place in the world) and stored as uint8 (FreeSurfer aseg
codes, at most 172 in these maps, fit unchanged), gzip level 9 without a timestamp (the same
bytes on every run; nibabel's level 1 made them larger than the uint32 originals). Its labels
are not altered. The maps chosen are those the bundled models hold out from training
(``configs/*.json``), so the demo does not show a model the anatomy it was trained on.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

MAPS = ("2mo_aseg.nii.gz", "8mo_aseg.nii.gz", "12mo_aseg.nii.gz")
MARGIN = 2
OUT = Path(__file__).resolve().parents[1] / "bids_infantseg" / "data" / "demo"


def cropped(path: Path) -> nib.Nifti1Image:
    """The label map cut to its labelled voxels plus ``MARGIN``, as uint8."""
    image = nib.load(path)
    labels = np.asanyarray(image.dataobj)
    if labels.min() < 0 or labels.max() > 255 or not np.array_equal(labels, np.round(labels)):
        raise ValueError(f"{path}: labels are not integers in 0-255")
    inside = np.argwhere(labels > 0)
    lo = np.maximum(inside.min(axis=0) - MARGIN, 0)
    hi = np.minimum(inside.max(axis=0) + MARGIN + 1, labels.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    out = nib.Nifti1Image(labels[box].astype(np.uint8), image.slicer[box].affine)
    out.set_qform(out.affine, code=1)
    out.set_sform(out.affine, code=1)
    out.header.set_xyzt_units("mm")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the infant-aseg-labels folder")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    for name in MAPS:
        try:
            image = cropped(args.source / name)
        except (OSError, ValueError) as exc:
            print(f"make_demo_labelmaps: {exc}", file=sys.stderr)
            return 2
        partial = OUT / f".{name}.part"
        partial.write_bytes(gzip.compress(image.to_bytes(), compresslevel=9, mtime=0))
        os.replace(partial, OUT / name)
        print(f"{name}: {image.shape}, {(OUT / name).stat().st_size} bytes")
    shutil.copyfile(args.source / "LICENSE", OUT / "LICENSE")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
