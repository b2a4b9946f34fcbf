"""Seconds for one rigid pose registration (``bids_infantseg.core.pose``) at the sizes used.

Why: pose runs once per scan before conforming; it should stay near a second on one core.
Cases: the 2 mm synthetic template the tests use, and a 1 mm template the size of the real
tpl-MNIInfant res-1 (195x233x159), each against a dHCP-like native scan (0.8 mm, 217x290x290,
stored LIA and turned 18 degrees).

    python -m benchmarks.pose [--repeat N] [--threads N]   (from the repository root)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from bids_infantseg.core.pose import rigid_to_template, rotation_angle_deg
from tests.templateflow_home import build_templateflow_home, synthetic_head

NATIVE_SHAPE = (217, 290, 290)
NATIVE_VOXEL_MM = 0.8


def _native() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A head turned 18 degrees about x and shifted, on a 0.8 mm LIA-stored grid."""
    affine = np.array(
        [[-NATIVE_VOXEL_MM, 0, 0, 87.0], [0, 0, NATIVE_VOXEL_MM, -130.0],
         [0, -NATIVE_VOXEL_MM, 0, 120.0], [0, 0, 0, 1.0]]
    )
    angle = np.radians(18.0)
    pose = np.eye(4)
    pose[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    pose[:3, 3] = (6.0, -4.0, 10.0)
    data = 400.0 * synthetic_head(NATIVE_SHAPE, affine, pose=pose)
    return data.astype(np.float32), affine, pose


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="ITK threads (0: ITK's default)")
    args = parser.parse_args(argv)
    if args.threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    data, affine, pose = _native()
    print(f"native {NATIVE_SHAPE} at {NATIVE_VOXEL_MM} mm; ITK threads "
          f"{sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}")
    with tempfile.TemporaryDirectory() as tmp:
        for voxel_mm in (2.0, 1.0):
            home = build_templateflow_home(Path(tmp) / f"{voxel_mm}", (1,), voxel_size=voxel_mm)
            template = home / "tpl-MNIInfant/cohort-1/tpl-MNIInfant_cohort-1_res-1_T2w.nii.gz"
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                result = rigid_to_template(data, affine, template)
                times.append(time.perf_counter() - start)
            error = rotation_angle_deg(result.transform @ pose)
            print(f"template at {voxel_mm:.0f} mm: best {min(times):.2f} s, median "
                  f"{np.median(times):.2f} s, rotation error {error:.2f} deg, {result.message}")


if __name__ == "__main__":
    main()
