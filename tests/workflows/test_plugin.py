"""--plugin/--plugin-args: the Nipype plugin a participant run uses (SLURM on clusters)."""

from __future__ import annotations

import pytest

from bids_infantseg.cli.main import build_parser, main
from bids_infantseg.workflows.resources import PluginError, choose_plugin


def test_default_is_linear_for_one_scan_at_a_time_and_multiproc_otherwise():
    assert choose_plugin(None, None, 1) == ("Linear", {})
    assert choose_plugin(None, None, 4) == ("MultiProc", {})  # n_procs added by plan_run


def test_named_plugin_keeps_its_arguments():
    args = {"sbatch_args": "--gres=gpu:1 --time=1:00:00", "max_jobs": 20}
    assert choose_plugin("SLURM", args, 1) == ("SLURM", args)


def test_unknown_plugin_is_refused_with_the_known_ones():
    with pytest.raises(PluginError, match="not a Nipype plugin.*SLURM"):
        choose_plugin("Slurmish", None, 1)


def test_plugin_args_must_be_a_json_object(capsys):
    parser = build_parser()
    args = parser.parse_args(["b", "o", "participant", "--plugin", "SLURM",
                              "--plugin-args", '{"sbatch_args": "--gres=gpu:1"}'])
    assert args.plugin_args == {"sbatch_args": "--gres=gpu:1"}
    for bad in ("{not json", "[1, 2]"):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(["b", "o", "participant", "--plugin-args", bad])
        assert exc.value.code == 2
    assert "--plugin-args" in capsys.readouterr().err


def test_run_with_an_explicit_plugin(head_dataset, tmp_path, tiny_model_dir, capsys,
                                    finished_study):
    out = tmp_path / "out"
    common = [str(head_dataset), str(out), "participant", "--model", str(tiny_model_dir),
              "--device", "cpu", "--participant-label", "01", "-w", str(tmp_path / "work")]
    assert main([*common, "--plugin", "Nope"]) == 2
    assert "not a Nipype plugin" in capsys.readouterr().err
    together = finished_study.together  # --plugin MultiProc --plugin-args '{"n_procs": 2}'
    assert together.status == 0 and "MultiProc: 2 scan(s) at once" in together.log
    assert len(list(together.out.glob("sub-*/**/anat/*_dseg.nii.gz"))) == 4
