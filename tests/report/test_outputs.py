from bids_infantseg.report.outputs import IGNORED, qc_sidecar, report_path


def test_report_goes_to_the_participants_figures_folder():
    assert report_path("01", "sub-01_ses-02_run-1").as_posix() == \
        "sub-01/figures/sub-01_ses-02_run-1_report.html"


def test_qc_sidecar_describes_every_column_and_keeps_the_summary():
    sidecar = qc_sidecar({"flags": {}})
    for column in ("index", "name", "volume_mm3", "components", "largest_component_fraction",
                   "view_dice", "mc_entropy", "mc_volume_cv"):
        assert "Description" in sidecar[column]
    assert sidecar["QC"] == {"flags": {}}
    assert {"*_qc.tsv", "*_qc.json"} == set(IGNORED)
