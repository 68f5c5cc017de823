"""Workers launched for resource shapes, as the cluster engines ask their schedulers for them.

No scheduler runs here: each launcher submits through a stand-in for its
``_run`` that keeps the command and the job script and answers with a job id
in the scheduler's own format. What is checked is pycrew's side: which
submissions go out and which directive lines each script carries.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

from pycrew._engines._cluster import ClusterLauncher, mebibytes
from pycrew._engines._launcher import Launcher, WorkerSpec
from pycrew._engines._lsf import LsfLauncher
from pycrew._engines._pbs import PbsLauncher
from pycrew._engines._sge import SgeLauncher
from pycrew._engines._slurm import SlurmLauncher
from pycrew._errors import LaunchError
from pycrew._resources import Resources

if TYPE_CHECKING:
    from collections.abc import Callable

SECRET = "shape-secret-never-in-a-script"
#: the shape of the brief's example, and a smaller one
BIG = Resources(cpus=4, memory=8 * 10**9, gpus=1, custom=(("license", 2),))
SMALL = Resources(cpus=1, memory=2 * 2**30)

#: what each engine's submit command prints, by job number
ANSWERS: dict[str, Callable[[int], str]] = {
    "sbatch": lambda n: f"{n}\n",
    "qsub": lambda n: f"{n}\n",
    "bsub": lambda n: f"Job <{n}> is submitted to default queue <normal>.\n",
}
PBS_ANSWER: Callable[[int], str] = lambda n: f"{n}[].server\n"  # noqa: E731

#: each engine: a launcher with no resource options, the prefix of its
#: directives, and the resource lines BIG and SMALL must give, in order
ENGINES: dict[str, tuple[Callable[..., ClusterLauncher], str, list[str], list[str]]] = {
    "slurm": (
        SlurmLauncher,
        "#SBATCH ",
        ["#SBATCH --cpus-per-task=4", "#SBATCH --mem=7630M", "#SBATCH --gres=gpu:1,license:2"],
        ["#SBATCH --cpus-per-task=1", "#SBATCH --mem=2048M"],
    ),
    "sge": (
        SgeLauncher,
        "#$ ",
        ["#$ -pe smp 4", "#$ -l h_vmem=1908M", "#$ -l gpu=1", "#$ -l license=2"],
        ["#$ -pe smp 1", "#$ -l h_vmem=2048M"],
    ),
    "pbs-pro": (
        lambda **kw: PbsLauncher(flavor="pro", **kw),
        "#PBS ",
        ["#PBS -l select=1:ncpus=4:mem=7630mb:ngpus=1:license=2"],
        ["#PBS -l select=1:ncpus=1:mem=2048mb"],
    ),
    "pbs-torque": (
        PbsLauncher,
        "#PBS ",
        ["#PBS -l mem=7630mb", "#PBS -l nodes=1:ppn=4:gpus=1", "#PBS -l gres=license:2"],
        ["#PBS -l mem=2048mb", "#PBS -l nodes=1:ppn=1"],
    ),
    "lsf": (
        LsfLauncher,
        "#BSUB ",
        [
            "#BSUB -n 4",
            "#BSUB -M 7630",
            '#BSUB -R "rusage[mem=7630:license=2]"',
            '#BSUB -gpu "num=1"',
        ],
        ["#BSUB -n 1", "#BSUB -M 2048", '#BSUB -R "rusage[mem=2048]"'],
    ),
}


def _spec(i: int, shape: Resources | None) -> WorkerSpec:
    return WorkerSpec(
        command=[
            "/usr/bin/python3",
            "-m",
            "pycrew",
            "worker",
            "--address",
            "h:1",
            "--id",
            f"c-{i}",
        ],
        env={"PYCREW_SECRET": SECRET},
        worker_id=f"c-{i}",
        controller="c",
        shape=shape,
    )


def _submissions(launcher: ClusterLauncher, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make ``launcher`` submit to a stand-in; the list fills with the scripts it submits."""
    scripts: list[str] = []

    def run(args: list[str], stdin: str | None = None, env: Any = None) -> str:
        command = os.path.basename(args[0])
        if command not in ANSWERS:
            return ""  # a question about the scheduler's settings: its defaults apply
        assert env is not None
        assert env["PYCREW_SECRET"] == SECRET  # the secret goes by the environment
        if stdin is None:  # a script file (PBS): read before the launcher removes it
            with open(args[-1]) as file:
                stdin = file.read()
        scripts.append(stdin)
        number = 100 + len(scripts)
        return (PBS_ANSWER if isinstance(launcher, PbsLauncher) else ANSWERS[command])(number)

    monkeypatch.setattr(launcher, "_run", run)
    return scripts


def _resource_lines(launcher: ClusterLauncher, script: str, prefix: str, count: int) -> list[str]:
    """The directive lines of ``script`` that a shapeless job of ``count`` workers lacks."""
    plain = set(launcher.directives(count, launcher.job_name("c"), count > 1))
    return [line for line in script.splitlines() if line.startswith(prefix) and line not in plain]


def _ids(script: str) -> list[str]:
    return [line.split("ids=")[1].split()[0] for line in script.splitlines() if "ids=" in line]


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_two_shapes_in_one_call_are_two_submissions_each_asking_for_its_own(
    engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, prefix, big, small = ENGINES[engine]
    launcher = make()
    scripts = _submissions(launcher, monkeypatch)
    specs = [_spec(0, BIG), _spec(1, SMALL), _spec(2, BIG), _spec(3, SMALL)]
    handles = launcher.launch_workers(specs)
    assert len(scripts) == 2
    assert _ids(scripts[0]) == ["c-0", "c-2"]
    assert _ids(scripts[1]) == ["c-1", "c-3"]
    assert _resource_lines(launcher, scripts[0], prefix, 2) == big
    assert _resource_lines(launcher, scripts[1], prefix, 2) == small
    # handles come back in the order of the specs, each in its shape's job
    assert [h.job_id for h in handles] == ["101", "102", "101", "102"]
    assert [launcher.describe_worker(h)["job"] for h in handles] == [h.id for h in handles]
    assert all(SECRET not in script for script in scripts)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_shapeless_workers_submit_the_script_they_always_did(
    engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, prefix, big, _small = ENGINES[engine]
    launcher = make(cores=2) if engine != "slurm" else make(cpus_per_task=2)
    scripts = _submissions(launcher, monkeypatch)
    plain = [_spec(0, None), _spec(2, None)]
    launcher.launch_workers([plain[0], _spec(1, BIG), plain[1]])
    assert len(scripts) == 2
    # the shapeless job is rendered just as without shapes, the shaped one on its own
    assert scripts[0] == launcher.script(plain, launcher.job_name("c"), array=True)
    assert _resource_lines(launcher, scripts[0], prefix, 2) == []
    assert _ids(scripts[1]) == ["c-1"]
    assert set(big) <= set(scripts[1].splitlines())


def test_a_call_without_shapes_submits_once_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    launcher = SlurmLauncher()
    scripts = _submissions(launcher, monkeypatch)
    launcher.launch_workers([_spec(i, None) for i in range(3)])
    assert len(scripts) == 1
    assert _ids(scripts[0]) == ["c-0", "c-1", "c-2"]


def test_slurm_shapes_replace_the_launchers_options_for_the_same_quantity() -> None:
    launcher = SlurmLauncher(cpus_per_task=2, memory_gigabytes_per_cpu=1, partition="gpu")
    lines = launcher.directives(1, "n", False, shape=Resources(gpus=2))
    assert "#SBATCH --cpus-per-task=2" in lines
    assert "#SBATCH --mem-per-cpu=1024M" in lines
    assert "#SBATCH --gres=gpu:2" in lines
    lines = launcher.directives(1, "n", False, shape=Resources(cpus=8, memory=10**6))
    assert "#SBATCH --cpus-per-task=8" in lines
    # sbatch takes --mem or --mem-per-cpu, never both
    assert "#SBATCH --mem=1M" in lines
    assert not any(line.startswith("#SBATCH --mem-per-cpu") for line in lines)
    assert not any(line.startswith("#SBATCH --gres") for line in lines)
    assert "#SBATCH --partition=gpu" in lines
    lines = launcher.directives(1, "n", False, shape=Resources(custom=(("license", 3),)))
    assert "#SBATCH --gres=license:3" in lines


def test_sge_shapes_use_the_launchers_parallel_environment_and_share_memory_by_slot() -> None:
    launcher = SgeLauncher(cores=2, parallel_environment="mpi", memory_gigabytes=1)
    lines = launcher.directives(1, "n", False, shape=Resources(memory=3 * 2**30))
    assert "#$ -pe mpi 2" in lines
    assert "#$ -l h_vmem=1536M" in lines  # 3 GiB over the launcher's 2 slots
    lines = launcher.directives(1, "n", False, shape=Resources(gpus=1))
    assert "#$ -pe mpi 2" in lines
    assert "#$ -l h_vmem=1024M" in lines
    assert "#$ -l gpu=1" in lines
    assert "#$ -pe mpi 6" in launcher.directives(1, "n", False, shape=Resources(cpus=6))


@pytest.mark.parametrize(
    ("flavor", "expected"),
    [
        ("pro", ["#PBS -l select=1:ncpus=2:mem=1024mb:ngpus=1"]),
        ("torque", ["#PBS -l mem=1024mb", "#PBS -l nodes=1:ppn=2:gpus=1"]),
    ],
)
def test_pbs_shapes_merge_with_the_launchers_cores_and_memory(
    flavor: str, expected: list[str]
) -> None:
    launcher = PbsLauncher(cores=2, memory_gigabytes=1, walltime_minutes=5, flavor=flavor)  # type: ignore[arg-type]
    lines = launcher.directives(1, "n", False, shape=Resources(gpus=1))
    assert [line for line in lines if line.startswith("#PBS -l") and "walltime" not in line] == (
        expected
    )


def test_lsf_shapes_keep_one_rusage_string() -> None:
    launcher = LsfLauncher(cores=2, memory_gigabytes=1)
    lines = launcher.directives(1, "n", False, shape=Resources(custom=(("license", 1),)))
    assert "#BSUB -n 2" in lines
    assert "#BSUB -M 1024" in lines
    assert [line for line in lines if "rusage" in line] == ['#BSUB -R "rusage[mem=1024:license=1]"']
    lines = LsfLauncher().directives(1, "n", False, shape=Resources(custom=(("license", 1),)))
    assert [line for line in lines if "rusage" in line] == ['#BSUB -R "rusage[license=1]"']


def test_a_job_of_several_workers_asks_for_each_of_their_shapes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    launcher = SlurmLauncher(processes=2)
    scripts = _submissions(launcher, monkeypatch)
    shape = Resources(cpus=2, memory=2**30, custom=(("license", 1),))
    handles = launcher.launch_workers([_spec(i, shape) for i in range(3)])
    assert len(scripts) == 1
    lines = scripts[0].splitlines()
    for line in ("#SBATCH --cpus-per-task=4", "#SBATCH --mem=2048M", "#SBATCH --gres=license:2"):
        assert line in lines
    assert [(h.index, h.slot) for h in handles] == [(0, 0), (0, 1), (1, 0)]


def test_workers_that_ask_for_gpus_do_not_share_a_job(monkeypatch: pytest.MonkeyPatch) -> None:
    launcher = SlurmLauncher(processes=2)
    scripts = _submissions(launcher, monkeypatch)
    with pytest.raises(LaunchError, match="cannot share a job"):
        launcher.launch_workers([_spec(0, Resources(gpus=1)), _spec(1, Resources(gpus=1))])
    assert scripts == []


class _OldPlugin(SlurmLauncher):
    """A plugin written before shapes: its directives take no shape."""

    def directives(self, count: int, name: str, array: bool) -> list[str]:  # type: ignore[override]
        return [f"#SBATCH --job-name={name}"]


def test_a_plugin_without_shapes_launches_shapeless_workers_and_refuses_shaped_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    launcher = _OldPlugin()
    scripts = _submissions(launcher, monkeypatch)
    launcher.launch_workers([_spec(0, None)])
    assert len(scripts) == 1
    with pytest.raises(LaunchError, match="_OldPlugin cannot ask SLURM for resources"):
        launcher.launch_workers([_spec(1, Resources(cpus=2))])


def test_memory_rounds_up_to_whole_mebibytes() -> None:
    assert [mebibytes(n) for n in (1, 2**20, 2**20 + 1, 8 * 10**9)] == [1, 1, 2, 7630]


@pytest.mark.parametrize("launcher", [SlurmLauncher(), SgeLauncher(), PbsLauncher(), LsfLauncher()])
def test_a_cluster_launcher_names_no_machine(launcher: Launcher) -> None:
    # every job is its own allocation: the scheduler knows what its nodes have
    assert launcher.machine() is None
