"""Fetch the MNIInfant templates ``--pose-normalize`` uses into ``TEMPLATEFLOW_HOME``.

Run once when the container image is built (runs never download):

    TEMPLATEFLOW_HOME=/opt/templateflow python scripts/fetch_templates.py
    TEMPLATEFLOW_HOME=/opt/templateflow python scripts/fetch_templates.py --skeleton-only

The cohorts and entities come from ``bids_infantseg.io.templates``, so the image holds exactly
the files the pipeline looks up. ``--skeleton-only`` lays out TemplateFlow's index of empty
stubs (needed so nothing is written to a read-only image at run time) without downloading;
``--pose-normalize`` then fails with a one-line error that names the missing template.
"""

from __future__ import annotations

import argparse
import sys

from templateflow import TemplateFlowClient

from bids_infantseg.io.templates import (
    COHORT_AGE_MONTHS,
    TEMPLATE,
    TemplateError,
    template_path,
    templateflow_home,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skeleton-only", action="store_true",
                        help="lay out the index of stubs only; download nothing")
    args = parser.parse_args(argv)
    home = templateflow_home()
    # Creating the client unpacks TemplateFlow's skeleton into an empty home.
    client = TemplateFlowClient(root=home, autoupdate=False, use_datalad=False)
    if args.skeleton_only:
        print(f"TemplateFlow skeleton in {home}; templates NOT fetched")
        return 0
    for cohort in sorted(COHORT_AGE_MONTHS):
        client.get(TEMPLATE, cohort=cohort, resolution=1, suffix="T2w", desc=None,
                   extension=".nii.gz")
        try:  # the same lookup the pipeline makes, so a fetch that "worked" is proven
            path = template_path(cohort)
        except TemplateError as exc:
            print(f"fetch_templates: {exc}", file=sys.stderr)
            return 1
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
