"""Operations on an existing Dask cluster: GPU routing by worker resources, and a worker killed mid-run.

The tests start what a lab starts by hand — ``prefect server start``, ``dask scheduler`` and ``dask worker``
processes on 127.0.0.1 — and run the flows through the ``brenier`` CLI with ``--dask-address``. Every process is
killed at teardown (``tests/ops_helpers.py``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from ops_helpers import REPO, dask_cluster, prefect_server, worker_env

from storage.tables import read_table
from storage.zarr_store import ItemStore
from tasks.geometry_images import GeometryImageConfig

SAMPLES = REPO / "data" / "samples"
# The plain cut (no augmentation) keeps cow's OT failure, so the run records one failed item.
GI_ARGS = ["--resolution", "33", "--levels", "2", "--samples", "1000", "--cut-paths", "0"]
GI_CONFIG = GeometryImageConfig(resolution=33, levels=2, samples=1000, cut_paths=0)
GPU_KEY_PREFIXES = ("reduce_scene-", "train_autodecoder-", "encode_collection-")


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    """A real Prefect server shared by this module's flows and Dask worker processes."""
    home = tmp_path_factory.mktemp("prefect-home")
    with prefect_server(home) as url:
        yield url, home


def _brenier(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "flows.runtime.cli", *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _meshes(tmp_path: Path, names: list[str]) -> Path:
    folder = tmp_path / "meshes"
    folder.mkdir()
    for name in names:
        shutil.copy(SAMPLES / "meshes" / f"{name}.obj", folder)
    return folder


def _groups(store: Path, run_id: str, item_ids: list[str]) -> tuple[set[str], set[str]]:
    """(complete, incomplete) items; every complete group's pyramids are read back whole against its rows."""
    complete, incomplete = set(), set()
    for item_id in item_ids:
        item = ItemStore(str(store), run_id, item_id)
        try:
            attrs = item.read_attrs()
        except (FileNotFoundError, ValueError):
            continue
        if attrs.get("complete") is not True:
            incomplete.add(item_id)
            continue
        complete.add(item_id)
        for row in item.completed_rows():
            levels, _ = item.read_pyramid(f"{row['parameterization']}/geometry_image")
            assert levels[row["level"]].shape == (3, row["resolution"], row["resolution"]), (item_id, row)
    return complete, incomplete


def _task_run_states(flow_name: str) -> list[dict[str, object]]:
    """Per flow run of ``flow_name`` on the module's server, oldest first: its state and its task runs' states."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        flow_runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                                          sort=FlowRunSort.START_TIME_ASC)
        report = []
        for flow_run in flow_runs:
            task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
            states = Counter(f"{run.name.rsplit('-', 1)[0]}:{run.state_type.value}" for run in task_runs)
            report.append({"flow_run": flow_run.state_type.value, "task_runs": dict(sorted(states.items()))})
        return report


@pytest.mark.slow
def test_gpu_tasks_run_only_on_the_gpu_worker(prefect_api, tmp_path: Path) -> None:
    """Scheduler + a GPU=1 worker + a CPU worker: every GPU-annotated task lands on the GPU worker."""
    url, home = prefect_api
    env = worker_env(url, home)
    workers = {"gpu-worker": ["--resources", "GPU=1"], "cpu-worker": []}
    with dask_cluster(workers, env, tmp_path) as cluster, cluster.client() as client:
        client.get_task_stream()  # registers the scheduler's task-stream plugin: it records from now on
        started = time.time()
        store = tmp_path / "store"
        # four GPU-bound items: with one thread per worker, an unannotated run would put some on the CPU worker
        _brenier(["reduce-gaussians", str(SAMPLES / "gaussians" / "donut-8k.ply"), "--store", str(store),
                  "--dask-address", cluster.address, "--ratio", "0.05", "--ratio", "0.1", "--ratio", "0.2",
                  "--ratio", "0.5", "--method", "ghap", "--method", "random", "--resolution", "32", "--views", "2",
                  "--train-views", "2", "--finetune-steps", "2"], env)
        names = {address: info["name"] for address, info in client.scheduler_info()["workers"].items()}
        stream = [(record["key"], names[record["worker"]]) for record in client.get_task_stream(start=started)
                  if record["status"] == "OK"]

    gpu_tasks = [worker for key, worker in stream if key.startswith(GPU_KEY_PREFIXES)]
    print(f"\nGPU-annotated tasks per worker: { {w: gpu_tasks.count(w) for w in set(gpu_tasks)} }")
    assert len(gpu_tasks) == 4 and set(gpu_tasks) == {"gpu-worker"}

    reduction = read_table(str(next(store.glob("reduce-*/tables/gaussian_reduction.parquet"))))
    assert len(reduction) == 4 * 2 * 2  # ratios x methods x (reduced, fine-tuned)
    assert sorted(reduction["ratio"].unique()) == [0.05, 0.1, 0.2, 0.5]
    assert reduction.groupby("ratio")["n_out"].first().tolist() == [410, 819, 1638, 4096]  # every item finished


@pytest.mark.slow
def test_worker_killed_mid_run_completes_without_duplicates_and_rerun_does_nothing(prefect_api, tmp_path: Path) -> None:
    """SIGKILL one of two workers (nanny included) while it computes an item, after the first item finished.

    Dask reschedules the lost work on the surviving worker; the item being written when its worker died
    restarts from scratch (``ItemStore.begin``), so every item ends complete, each table row exists once, and no
    group read as complete before all its arrays were written. A second run of the same command does no work.
    """
    url, home = prefect_api
    env = worker_env(url, home)
    names = ["woody", "cow", "spot", "alligator", "fandisk"]
    meshes = _meshes(tmp_path, names)
    store = tmp_path / "store"
    run_id = GI_CONFIG.default_run_id()
    args = ["geometry-images", str(meshes), "--store", str(store), *GI_ARGS]
    seen: dict[str, object] = {}
    with dask_cluster({"worker-a": [], "worker-b": []}, env, tmp_path) as cluster, cluster.client() as client:
        run = subprocess.Popen([sys.executable, "-m", "flows.runtime.cli", *args, "--dask-address", cluster.address],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 240
            victim = None
            while victim is None and run.poll() is None and time.monotonic() < deadline:
                complete, _ = _groups(store, run_id, names)
                busy = [address for address, keys in client.processing().items() if keys]
                if complete and busy:
                    victim = client.scheduler_info()["workers"][busy[0]]["name"]
                    seen["completed_before_kill"] = sorted(complete)
                    cluster.kill_worker(victim)
                time.sleep(0.2)
            assert victim is not None, "the run ended before a worker could be killed mid-run"
            seen["killed"] = victim
            # right after the kill: whatever is half-written reads as incomplete, every complete group is whole
            complete, incomplete = _groups(store, run_id, names)
            seen["incomplete_after_kill"] = sorted(incomplete)
            output, _ = run.communicate(timeout=300)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        assert run.returncode == 3, output[-4000:]  # 3: some items failed (cow, by design)
        seen["workers_left"] = sorted(info["name"] for info in client.scheduler_info()["workers"].values())

        complete, incomplete = _groups(store, run_id, names)
        assert complete == set(names) and not incomplete
        rows = read_table(str(store / run_id / "tables" / "geometry_images.parquet"))
        assert not rows.duplicated(["item_id", "parameterization", "level"]).any()
        # cow's OT solve fails by design (harmonic map too crowded): 1 parameterization, the others 2; 2 levels each
        expected = {name: (1 if name == "cow" else 2) * 2 for name in names}
        assert rows.groupby("item_id").size().to_dict() == expected
        failures = read_table(str(store / run_id / "tables" / "failures.parquet"))
        assert failures[["item_id", "stage"]].values.tolist() == [["cow", "ot_parameterization"]]

        # re-run: everything is skipped, no group metadata is rewritten, the same rows come back
        markers = {name: (store / run_id / name / "zarr.json").stat().st_mtime_ns for name in names}
        again = subprocess.run([sys.executable, "-m", "flows.runtime.cli", *args, "--dask-address", cluster.address],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 3, again.stdout[-3000:] + again.stderr[-3000:]
        assert f"{len(names)} meshes, {len(names)} skipped as finished" in again.stdout
        assert {name: (store / run_id / name / "zarr.json").stat().st_mtime_ns for name in names} == markers
        rerun_rows = read_table(str(store / run_id / "tables" / "geometry_images.parquet"))
        key = ["item_id", "parameterization", "level"]
        assert rerun_rows.sort_values(key).reset_index(drop=True).equals(rows.sort_values(key).reset_index(drop=True))
    seen["prefect_task_runs"] = runs = _task_run_states("geometry-images")
    print(f"\nfault test saw: {seen}")
    # in Prefect too: the re-executed task runs end Completed, none is left Running by the dead worker
    assert [run["flow_run"] for run in runs] == ["COMPLETED", "COMPLETED"]
    assert all(state.endswith(":COMPLETED") for run in runs for state in run["task_runs"])
    assert seen["workers_left"] == sorted({"worker-a", "worker-b"} - {seen["killed"]})


class _LostFuture:
    """A future whose Dask layer failed: ``result`` raises instead of returning a failed state."""

    def __init__(self, error: BaseException, task_run_id=None) -> None:
        self.error = error
        self.task_run_id = task_run_id

    def result(self, raise_on_failure: bool = True):
        raise self.error


@pytest.mark.slow
def test_task_whose_workers_died_is_a_failure_and_crashed_in_prefect(prefect_api) -> None:
    """``KilledWorker`` is returned, not raised, and the task run its worker left Running is set to Crashed."""
    from distributed import KilledWorker
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from flows.runtime.task_runner import task_outcome

    @task(name="doomed")
    def doomed() -> None:
        """Never runs: its task run is created by hand below."""

    @flow(name="ops-crash-marking")
    def record() -> tuple:
        with get_client(sync_client=True) as client:
            run = client.create_task_run(doomed, flow_run_id=None, dynamic_key="0", state=Running())
            last_worker = SimpleNamespace(address="tcp://127.0.0.1:1")  # a WorkerState on the scheduler
            error = KilledWorker("doomed-1234", last_worker, allowed_failures=3)
            outcome = task_outcome(_LostFuture(error, run.id))
            return outcome is error, client.read_task_run(run.id).state

    returned, state = record()
    assert returned
    assert state.type.value == "CRASHED" and "KilledWorker" in state.message


def test_gpu_annotation_only_inside_a_dask_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    import dask

    from flows.runtime.task_runner import GPU_ANNOTATION_ENV, gpu_annotation

    with gpu_annotation() as annotated:  # no flow run, no Dask cluster: nothing to route
        assert annotated is False and "resources" not in dask.get_annotations()
    monkeypatch.setenv(GPU_ANNOTATION_ENV, "sometimes")
    with pytest.raises(ValueError, match="sometimes"):
        with gpu_annotation():
            pass
