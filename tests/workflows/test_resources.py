"""CPUs a run may use, and the plan that shares them: every node's request fits the plugin."""

from __future__ import annotations

import networkx as nx
import pytest
from nipype.pipeline.plugins import MultiProcPlugin

from bids_infantseg.model.card import load_model
from bids_infantseg.workflows.infantseg import SegmentSettings, init_participant_wf
from bids_infantseg.workflows.resources import PluginError, available_cpus, check_plugin, plan_run
from tests.bids_factory import write_scan


@pytest.fixture
def tiny_settings(tiny_model_dir):
    """``settings(folder, threads)``: the tiny model's SegmentSettings on the CPU."""
    model = load_model(tiny_model_dir)

    def settings(folder, threads: int) -> SegmentSettings:
        return SegmentSettings(model=model, output_dir=folder / "out",
                               bids_dir=folder / "bids", write_probseg=False, device="cpu",
                               batch_size=2, num_threads=threads)

    return settings


@pytest.mark.parametrize("omp_nthreads", [None, *range(1, 9)])
@pytest.mark.parametrize("nprocs", range(1, 5))
@pytest.mark.parametrize("cpus", range(1, 9))
@pytest.mark.parametrize("scans", range(1, 5))
def test_every_request_fits_and_nothing_is_oversubscribed(scans, cpus, nprocs, omp_nthreads):
    for plugin in (None, "MultiProc", "LegacyMultiProc", "Linear"):
        for gpu in (False, True):
            plan = plan_run(plugin, None, scans=scans, cpus=cpus, nprocs=nprocs,
                            omp_nthreads=omp_nthreads, gpu=gpu)
            assert plan.concurrent == min(nprocs, scans)  # --nprocs N: N scans at once
            assert plan.threads >= 1
            assert plan.concurrent * plan.threads <= max(cpus, plan.concurrent)
            if omp_nthreads and omp_nthreads * plan.concurrent <= cpus:
                assert plan.threads == omp_nthreads
            if plan.plugin in ("MultiProc", "LegacyMultiProc"):
                n_procs = plan.plugin_args["n_procs"]
                assert plan.threads <= n_procs  # the segment node; the others ask for 1
                assert n_procs // plan.threads >= plan.concurrent  # N segments at once
                if gpu:
                    assert plan.threads <= plan.plugin_args["n_gpu_procs"]


def test_a_users_plugin_counts_cap_the_threads():
    plan = plan_run("MultiProc", {"n_procs": 2, "n_gpu_procs": 1}, scans=1, cpus=8, nprocs=1,
                    omp_nthreads=None, gpu=True)
    assert plan.threads == 1
    assert plan.plugin_args["n_procs"] == 2 and plan.plugin_args["n_gpu_procs"] == 1


def test_a_cluster_plugin_takes_omp_nthreads_as_given():
    plan = plan_run("SLURM", {"sbatch_args": "-c 8"}, scans=3, cpus=2, nprocs=3,
                    omp_nthreads=8)
    assert plan.threads == 8 and plan.plugin_args == {"sbatch_args": "-c 8"}


@pytest.mark.parametrize("value", [0, -1, "2", 1.5, True])
def test_plugin_counts_must_be_positive_integers(value):
    with pytest.raises(PluginError, match="n_procs: must be a positive integer"):
        check_plugin("MultiProc", {"n_procs": value})


@pytest.mark.parametrize("scans,cpus,nprocs,omp_nthreads",
                         [(1, 2, 2, None), (3, 2, 2, 4), (2, 8, 4, 8), (4, 1, 4, None)])
def test_nipype_accepts_the_workflow_it_is_given(tmp_path, tiny_settings, scans, cpus, nprocs,
                                                 omp_nthreads):
    """MultiProc's own check, the one that refused the one-scan run, on the real nodes."""
    plan = plan_run("MultiProc", None, scans=scans, cpus=cpus, nprocs=nprocs,
                    omp_nthreads=omp_nthreads)
    settings = tiny_settings(tmp_path, plan.threads)
    images = [write_scan(tmp_path / "bids", subject="01", run=str(i))
              for i in range(1, scans + 1)]
    wf = init_participant_wf(images, settings, tmp_path / "work")
    graph = nx.DiGraph()
    graph.add_nodes_from(wf.get_node(name) for name in wf.list_node_names())
    assert max(node.n_procs for node in graph) == plan.threads
    plugin = MultiProcPlugin(plugin_args={**plan.plugin_args, "raise_insufficient": True})
    try:
        plugin._prerun_check(graph)  # raises "Insufficient resources available for job"
    finally:
        plugin.pool.shutdown()


def test_available_cpus_is_the_least_of_affinity_cgroup_and_slurm(tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    cpu_max = tmp_path / "cpu.max"
    assert available_cpus(cpu_max, {}) == 8  # no cgroup file, no SLURM
    cpu_max.write_text("max 100000\n")
    assert available_cpus(cpu_max, {}) == 8
    cpu_max.write_text("250000 100000\n")
    assert available_cpus(cpu_max, {}) == 3  # 2.5 CPUs of time: 3 threads share it
    assert available_cpus(cpu_max, {"SLURM_CPUS_ON_NODE": "2"}) == 2
    assert available_cpus(cpu_max, {"SLURM_CPUS_PER_TASK": "1",
                                    "SLURM_CPUS_ON_NODE": "6"}) == 1
    cpu_max.write_text("garbage")
    assert available_cpus(cpu_max, {"SLURM_CPUS_PER_TASK": ""}) == 8
