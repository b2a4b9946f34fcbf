"""benchmarks/postprocess.py: times QC pieces and the report on a finished participant run."""

from __future__ import annotations

from bids_infantseg.cli.main import main as app
from tests.benchmarks.test_accuracy import _load
from tests.bids_factory import write_description
from tests.conftest import t2w_path, write_head

postprocess = _load("postprocess")


def test_prints_one_row_per_scan_with_its_grid_and_times(tmp_path, tiny_model_dir, capsys):
    root, out = tmp_path / "bids", tmp_path / "out"
    write_description(root)
    for seed, subject in enumerate(("01", "02"), start=1):
        write_head(t2w_path(root, subject), seed=seed)
    assert app([str(root), str(out), "participant", "--model", str(tiny_model_dir),
                "--nprocs", "1"]) == 0
    capsys.readouterr()
    assert postprocess.main([str(root), str(out), "--repeats", "1"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["scan", "grid", "qc_components_s", "report_s"]
    assert [r[0] for r in rows[1:]] == ["sub-01", "sub-02"]
    assert all(r[1] == "48x56x44" and float(r[2]) >= 0 and float(r[3]) > 0 for r in rows[1:]), rows
