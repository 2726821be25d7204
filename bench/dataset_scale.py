"""Benchmark: the 2,000-mesh geometry-image run of issue 17: memory, Prefect server latency, throughput and
overhead against a plain process-pool loop, at several dataset sizes (default 200 and 2,000 meshes).

Per dataset size:

1. **dataset** (:func:`build_dataset`, kept and reused between runs): every frame of the captured crane
   performance (``consistent/crane/crane.npz``, 175 frames of one 10,002-vertex mesh, written as binary PLY),
   every horse-gallop frame (48 and the reference, OBJ as they are), the 9 classic meshes of ``meshes/`` and the
   20 of ``meshes-more/`` (OBJ and OFF as they are): 253 base meshes. They are interleaved in proportion to their
   sources (crane, horse, meshes, meshes-more) so that any prefix is a representative mix; a size below 253 takes
   that prefix, a larger one adds rotated copies of the base meshes in the same order (``<name>-rotNN``, a
   rotation about a random axis by a random angle, seeded per file; OBJ stays OBJ, everything else becomes
   binary PLY) until there are exactly that many files. Mixed on purpose: genus > 0, open, multi-component and
   non-manifold meshes fail or take other paths, as in a real dataset.
2. **flow**: the real CLI as a subprocess, ``brenier geometry-images DIR --store STORE --resolution 65 --levels 2
   --samples 2000 --workers W`` (default codec; batches of meshes per task as the flow sizes them), with
   ``PREFECT_API_URL`` pointing at a ``prefect server start`` started here for this size alone (SQLite in a
   temporary ``PREFECT_HOME``; start-up not timed; stopped before the loop runs). Every second two threads sample
   (a) the summed RSS of the CLI process and all its descendants (the Dask nannies and workers; shared pages are
   counted once per process, so this over-counts what the machine holds) and (b) the latency of ``GET
   {api}/health`` (httpx, 10 s timeout; an error or a timeout counts as a sample over 1 s). The wall time is the
   subprocess's, start-up of Python, the LocalCluster and the flow run included. Finished and failed meshes are
   the distinct ``item_id`` of ``STORE/<run_id>/tables/{geometry_images,failures}.parquet``; a mesh whose OT map
   failed but whose harmonic images exist is in both.
3. **plain loop** (only for ``--loop-count`` sizes; default the smallest size, because the loop at 2,000 meshes
   doubles the run time of the benchmark): the same meshes on the same width, W spawned processes of a
   ``ProcessPoolExecutor`` each running ``parameterize_mesh.fn`` then ``encode_geometry_images.fn`` per mesh on
   a fresh store: no Prefect, no Dask, no tables. Its wall time counts from creating the pool (spawning and
   imports included, like the CLI's start-up) to the last mesh; its RSS is sampled the same way, over this
   process and its descendants (the pool workers).

Overhead = (flow wall - loop wall) / loop wall. Every process uses one torch/BLAS thread (``OMP_NUM_THREADS`` and
``MKL_NUM_THREADS`` set to 1 here, inherited by the CLI, its Dask workers and the pool). The load average is
printed: on a shared machine other processes slow everything, and W workers only help with W idle cores.

Targets of issue 17, printed next to the figures: peak RSS of the flow at the largest size within 1.5x of the
peak at the smallest; ``/health`` within 1 s at every sample; overhead below 10% of the plain loop.

Figures go to ``OUT/dataset_scale.json`` (with the RSS and latency time series; written after every phase, so
an interrupted run leaves what it measured), the series also to ``OUT/samples.parquet`` and
``OUT/health.parquet``; each CLI's output to ``OUT/flow-<count>.log`` and its server's log to
``OUT/server-<count>.log``. Stores are deleted after each size unless ``--keep``.

Run: ``.venv/bin/python bench/dataset_scale.py [--count 200 2000] [--workers 2] [--loop-count 200] [--out DIR]
[--keep]``. It takes hours: measured 5.5 s of wall time per mesh on 2 workers (2 cores; 16 meshes, flow and loop
alike), so about 3 h for the 2,000-mesh flow and 20 min each for the 200-mesh flow and loop. Quick check (3 min):
``.venv/bin/python bench/dataset_scale.py --count 16 --loop-count 16 --out /tmp/bench-ds16``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported, here, in the CLI and its workers, in the pool
os.environ["MKL_NUM_THREADS"] = "1"

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import psutil  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"  # ../shared/data from the repository root
DEFAULT_OUT = REPO / "runs" / "bench-dataset-scale"
SEED = 17
RESOLUTION, LEVELS, SAMPLES = 65, 2, 2000
CUT_PATHS = 0  # --cut-paths: the plain cut by default; augmentation is ~60% of a crane frame's time (profiled)
SAMPLE_SECONDS = 1.0
HEALTH_TIMEOUT_S = 10.0
TARGET_RSS_RATIO = 1.5
TARGET_HEALTH_S = 1.0
TARGET_OVERHEAD = 0.10
MESH_SUFFIXES = {".obj", ".ply", ".stl", ".off", ".glb"}  # storage.meshes.MESH_EXTENSIONS
RUN_LINE = re.compile(r"^run (\S+): \d+ meshes", re.MULTILINE)


# --- dataset ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BaseMesh:
    """One base mesh: a crane frame (``frame`` set) or a file copied as it is (``source`` set)."""

    name: str  # output file name
    source: Path | None = None
    frame: int | None = None


def base_meshes(shared: Path) -> list[BaseMesh]:
    """The 253 base meshes, interleaved in proportion to their four sources (see the module docstring)."""
    crane = np.load(shared / "consistent" / "crane" / "crane.npz")
    groups = [
        [BaseMesh(f"crane-{i:04d}.ply", frame=i) for i in range(len(crane["vertices"]))],
        [BaseMesh(p.name if p.name.startswith("horse-gallop") else f"horse-gallop-{p.name}", source=p)
         for p in sorted((shared / "consistent" / "horse-gallop").glob("*.obj"))],
        [BaseMesh(p.name, source=p) for p in sorted((shared / "meshes").iterdir()) if p.suffix in MESH_SUFFIXES],
        [BaseMesh(p.name, source=p) for p in sorted((shared / "meshes-more").iterdir()) if p.suffix in MESH_SUFFIXES],
    ]
    order = sorted(((i + 0.5) / len(group), g, i) for g, group in enumerate(groups) for i in range(len(group)))
    bases = [groups[g][i] for _, g, i in order]
    names = [b.name for b in bases]
    if len(set(Path(n).stem for n in names)) != len(names):
        raise ValueError("base meshes with the same file stem")
    return bases


def _arrays(base: BaseMesh, shared: Path, cache: dict) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and faces of a base mesh (the file read by trimesh without processing)."""
    import trimesh

    if base.frame is not None:
        if "crane" not in cache:
            with np.load(shared / "consistent" / "crane" / "crane.npz") as crane:
                cache["crane"] = (crane["vertices"], crane["faces"])
        vertices, faces = cache["crane"]
        return vertices[base.frame].astype(np.float64), faces
    if base.name not in cache:
        mesh = trimesh.load(base.source, force="mesh", process=False)
        cache[base.name] = (np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces))
    return cache[base.name]


def _write(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    import trimesh

    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    if path.suffix == ".obj":
        mesh.export(path, file_type="obj", include_normals=False, include_texture=False)
    else:
        mesh.export(path, file_type="ply")  # binary


def _mesh_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.suffix.lower() in MESH_SUFFIXES] if folder.is_dir() else []


def build_dataset(out_dir: Path, count: int, shared: Path = SHARED, seed: int = SEED) -> Path:
    """Write ``count`` mesh files to ``out_dir`` (see the module docstring); reuse it if it holds ``count`` already.

    File ``k`` (in the interleaved order) is the base mesh ``k mod 253``, as it is for ``k < 253``, else rotated
    about a random axis by a random angle drawn from ``numpy.random.default_rng([seed, k])`` and named
    ``<stem>-rot<k // 253>``. ``out_dir/manifest.json`` lists each file, its source and its rotation.
    """
    import trimesh

    out_dir = Path(out_dir)
    if len(_mesh_files(out_dir)) == count:
        return out_dir
    bases = base_meshes(shared)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    cache: dict = {}
    manifest = []
    for k in range(count):
        base = bases[k % len(bases)]
        copy = k // len(bases)
        entry = {"file": base.name, "source": str(base.source) if base.source else f"crane.npz[{base.frame}]"}
        if copy == 0 and base.source is not None:
            shutil.copyfile(base.source, partial / base.name)
        elif copy == 0:
            _write(partial / base.name, *_arrays(base, shared, cache))
        else:
            rng = np.random.default_rng([seed, k])
            axis = rng.normal(size=3)
            axis /= np.linalg.norm(axis)
            angle = float(rng.uniform(0.0, 2.0 * np.pi))
            rotation = trimesh.transformations.rotation_matrix(angle, axis)[:3, :3]
            stem, suffix = Path(base.name).stem, Path(base.name).suffix
            name = f"{stem}-rot{copy:02d}{'.obj' if suffix == '.obj' else '.ply'}"
            vertices, faces = _arrays(base, shared, cache)
            _write(partial / name, vertices @ rotation.T, faces)
            entry.update(file=name, rotation_axis=axis.tolist(), rotation_angle=angle)
        manifest.append(entry)
    (partial / "manifest.json").write_text(json.dumps({"count": count, "seed": seed, "files": manifest}, indent=1))
    if len(_mesh_files(partial)) != count:
        raise RuntimeError(f"{partial} holds {len(_mesh_files(partial))} mesh files, not {count}")
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    return out_dir


# --- sampling -----------------------------------------------------------------------------------------------------

def tree_rss(pid: int, exclude: int | None = None) -> tuple[int, int]:
    """Summed RSS (bytes) and count of ``pid`` and its descendants, leaving out ``exclude`` and its descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    skip: set[int] = set()
    if exclude is not None:
        with contextlib.suppress(psutil.NoSuchProcess):
            skip = {exclude, *(p.pid for p in psutil.Process(exclude).children(recursive=True))}
    total = n = 0
    for proc in procs:
        if proc.pid in skip:
            continue
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_info().rss
            n += 1
    return total, n


class Sampler:
    """Every ``SAMPLE_SECONDS``, in two threads: the RSS of a process tree (and of the server's), and the latency
    of ``GET <api_url>/health``."""

    def __init__(self, pid: int, api_url: str | None = None, server_pid: int | None = None,
                 exclude: int | None = None) -> None:
        self.pid, self.api_url, self.server_pid, self.exclude = pid, api_url, server_pid, exclude
        self.rss: list[dict] = []
        self.health: list[dict] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sample_rss, daemon=True)]
        if api_url:
            self._threads.append(threading.Thread(target=self._sample_health, daemon=True))

    def __enter__(self) -> Sampler:
        self.t0 = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *args) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(HEALTH_TIMEOUT_S + 5)

    def _ticks(self):
        tick = 0
        while not self._stop.is_set():
            yield time.monotonic() - self.t0
            tick = max(tick + 1, int((time.monotonic() - self.t0) / SAMPLE_SECONDS))  # a slow sample skips ticks
            self._stop.wait(max(0.0, self.t0 + tick * SAMPLE_SECONDS - time.monotonic()))

    def _sample_rss(self) -> None:
        for t in self._ticks():
            rss, processes = tree_rss(self.pid, self.exclude)
            sample = {"t_s": round(t, 2), "rss_mb": rss / 2**20, "processes": processes}
            if self.server_pid is not None:
                sample["server_rss_mb"] = tree_rss(self.server_pid)[0] / 2**20
            self.rss.append(sample)

    def _sample_health(self) -> None:
        for t in self._ticks():
            start = time.perf_counter()
            try:
                ok = httpx.get(f"{self.api_url}/health", timeout=HEALTH_TIMEOUT_S).status_code == 200
            except httpx.HTTPError:
                ok = False
            self.health.append({"t_s": round(t, 2), "latency_ms": 1000 * (time.perf_counter() - start), "ok": ok})

    def figures(self) -> dict:
        """Peak RSS, and the health latency's max, p50, p99 and samples over 1 s (errors included)."""
        out = {"peak_rss_mb": max((s["rss_mb"] for s in self.rss), default=None),
               "peak_server_rss_mb": max((s.get("server_rss_mb", 0.0) for s in self.rss), default=None)
               if self.server_pid is not None else None, "rss_samples": len(self.rss)}
        if self.api_url:
            ms = np.array([h["latency_ms"] for h in self.health])
            bad = np.array([not h["ok"] for h in self.health], dtype=bool)
            out.update(
                health_samples=len(ms), health_errors=int(bad.sum()),
                health_max_ms=float(ms.max()) if len(ms) else None,
                health_p50_ms=float(np.percentile(ms, 50)) if len(ms) else None,
                health_p99_ms=float(np.percentile(ms, 99)) if len(ms) else None,
                health_over_1s=int(((ms > 1000 * TARGET_HEALTH_S) | bad).sum()),
            )
        return out


# --- the flow through the CLI -------------------------------------------------------------------------------------

def distinct_items(table: Path) -> int | None:
    """Distinct ``item_id`` of a Parquet table folder; 0 for a table without rows, None if it is missing."""
    if not table.exists():
        return None
    frame = pd.read_parquet(table, columns=["item_id"])
    return int(frame["item_id"].nunique())


def run_flow(data_dir: Path, store: Path, workers: int, api_url: str, server_pid: int, log: Path) -> dict:
    """The CLI on ``data_dir`` as a subprocess, sampled; returns its figures and series."""
    brenier = Path(sys.executable).with_name("brenier")
    command = [str(brenier), "geometry-images", str(data_dir), "--store", str(store), "--resolution",
               str(RESOLUTION), "--levels", str(LEVELS), "--samples", str(SAMPLES), "--cut-paths", str(CUT_PATHS),
               "--workers", str(workers)]
    env = {**os.environ, "PREFECT_API_URL": api_url, "COLUMNS": "200"}
    with open(log, "wb") as out:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT)
        try:
            with Sampler(process.pid, api_url, server_pid) as sampler:
                code = process.wait()
                wall = time.perf_counter() - start
        finally:
            if process.poll() is None:  # interrupted: stop the CLI and its workers
                from flows.runtime.prefect_server import stop_process_tree

                stop_process_tree(process.pid)
    text = log.read_text(errors="replace")
    found = RUN_LINE.findall(text)
    runs = [p for p in store.iterdir() if p.is_dir()] if store.is_dir() else []
    run_id = found[-1] if found else (runs[0].name if len(runs) == 1 else None)
    tables = store / run_id / "tables" if run_id else None
    return {
        "command": " ".join(command), "exit_code": code, "wall_s": wall, "run_id": run_id,
        "finished": distinct_items(tables / "geometry_images.parquet") if tables else None,
        "failed": distinct_items(tables / "failures.parquet") if tables else None,
        **sampler.figures(), "series": {"rss": sampler.rss, "health": sampler.health},
        "log_tail": text[-3000:] if code not in (0, 3) else None,
    }


# --- the plain loop -----------------------------------------------------------------------------------------------

def _loop_init() -> None:
    import torch

    torch.set_num_threads(1)


def _loop_item(item, store: str, run_id: str, config) -> dict:
    """One mesh in a pool worker: ``parameterize_mesh.fn`` then ``encode_geometry_images.fn``."""
    from prefect.logging import disable_run_logger

    from tasks.geometry_images import encode_geometry_images, parameterize_mesh

    start = time.perf_counter()
    try:
        with disable_run_logger():
            result = encode_geometry_images.fn(parameterize_mesh.fn(item, store, run_id, config), store, run_id,
                                               config)
    except Exception as error:  # noqa: BLE001 - counted as a failed mesh, as the flow would
        return {"item_id": item.item_id, "seconds": time.perf_counter() - start, "rows": 0, "failures": 1,
                "error": f"{type(error).__name__}: {error}"}
    return {"item_id": item.item_id, "seconds": time.perf_counter() - start,
            "rows": len(result.rows("geometry_images")), "failures": len(result.failures), "error": None}


def run_loop(data_dir: Path, store: Path, workers: int) -> dict:
    """The plain loop over ``data_dir`` on ``workers`` spawned processes, sampled; returns its figures."""
    from storage.meshes import list_mesh_items
    from tasks.geometry_images import GeometryImageConfig

    config = GeometryImageConfig(resolution=RESOLUTION, levels=LEVELS, samples=SAMPLES, cut_paths=CUT_PATHS)
    items = list_mesh_items(str(data_dir))
    store.mkdir(parents=True, exist_ok=True)
    with Sampler(os.getpid()) as sampler:
        start = time.perf_counter()
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_loop_init) as pool:
            results = list(pool.map(_loop_item, items, [str(store)] * len(items), ["loop"] * len(items),
                                    [config] * len(items)))
        wall = time.perf_counter() - start
    seconds = np.array([r["seconds"] for r in results])
    return {
        "wall_s": wall, "finished": sum(r["rows"] > 0 for r in results),
        "failed": sum(r["failures"] > 0 for r in results),
        "errors": {r["item_id"]: r["error"] for r in results if r["error"]},
        "work_s_mean": float(seconds.mean()), "work_s_median": float(np.median(seconds)),
        "work_s_max": float(seconds.max()), "work_s_sum": float(seconds.sum()),
        "slowest": sorted(((r["seconds"], r["item_id"]) for r in results), reverse=True)[:5],
        **sampler.figures(), "series": {"rss": sampler.rss},
    }


# --- report -------------------------------------------------------------------------------------------------------

def _fmt(value, spec: str = ".0f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def print_report(results: list[dict], workers: int) -> dict:
    """The table of figures per size and the issue's targets; returns the targets' verdicts."""
    header = ["meshes", "workers", "flow wall s", "meshes/min", "exit", "finished", "failed", "peak RSS MB",
              "server RSS MB", "health max/p99 ms", "health >1 s", "loop wall s", "loop RSS MB", "overhead %"]
    rows = []
    for r in results:
        flow, loop = r["flow"], r.get("loop")
        rows.append([
            str(r["count"]), str(workers), _fmt(flow["wall_s"], ".1f"), _fmt(flow["meshes_per_min"], ".1f"),
            str(flow["exit_code"]), _fmt(flow["finished"], "d"), _fmt(flow["failed"], "d"),
            _fmt(flow["peak_rss_mb"]), _fmt(flow["peak_server_rss_mb"]),
            f"{_fmt(flow['health_max_ms'])} / {_fmt(flow['health_p99_ms'])}", _fmt(flow["health_over_1s"], "d"),
            _fmt(loop and loop["wall_s"], ".1f"), _fmt(loop and loop["peak_rss_mb"]),
            _fmt(r.get("overhead") and 100 * r["overhead"], "+.1f"),
        ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "NOT met")

    targets = {}
    print("\ntargets of issue 17:")
    small, large = results[0], results[-1]
    if len(results) > 1 and small["flow"]["peak_rss_mb"] and large["flow"]["peak_rss_mb"]:
        ratio = large["flow"]["peak_rss_mb"] / small["flow"]["peak_rss_mb"]
        targets["rss"] = {"ratio": ratio, "met": ratio <= TARGET_RSS_RATIO}
        text = (f"{large['flow']['peak_rss_mb']:.0f} / {small['flow']['peak_rss_mb']:.0f} MB = {ratio:.2f}x "
                f"({large['count']} vs {small['count']} meshes)")
    else:
        targets["rss"] = {"ratio": None, "met": None}
        text = "needs two sizes"
    print(f"  peak RSS at the largest size within {TARGET_RSS_RATIO}x of the smallest: {text} -> "
          f"{verdict(targets['rss']['met'])}")
    healthy = [r["flow"]["health_over_1s"] == 0 and r["flow"]["health_samples"] > 0 for r in results]
    targets["health"] = {"met": all(healthy)}
    print(f"  /health within {TARGET_HEALTH_S:.0f} s throughout: "
          + ", ".join(f"max {_fmt(r['flow']['health_max_ms'])} ms, {r['flow']['health_over_1s']} over "
                      f"({r['count']})" for r in results) + f" -> {verdict(targets['health']['met'])}")
    overheads = [(r["count"], r["overhead"]) for r in results if r.get("overhead") is not None]
    targets["overhead"] = {"met": all(o < TARGET_OVERHEAD for _, o in overheads) if overheads else None}
    print(f"  overhead below {100 * TARGET_OVERHEAD:.0f}% of the plain loop: "
          + (", ".join(f"{100 * o:+.1f}% ({c})" for c, o in overheads) or "no loop run")
          + f" -> {verdict(targets['overhead']['met'])}")

    print("\nper mesh (wall x workers / meshes = worker-seconds per mesh; work = the loop's own timing per mesh):")
    for r in results:
        flow, loop = r["flow"], r.get("loop")
        line = (f"  {r['count']}: flow {flow['wall_s'] / r['count']:.2f} s wall, "
                f"{flow['wall_s'] * workers / r['count']:.2f} worker-s")
        if loop:
            line += (f"; loop {loop['wall_s'] / r['count']:.2f} s wall, {loop['wall_s'] * workers / r['count']:.2f}"
                     f" worker-s, work mean {loop['work_s_mean']:.2f} / median {loop['work_s_median']:.2f} / max "
                     f"{loop['work_s_max']:.1f} s (slowest: "
                     + ", ".join(f"{name} {s:.0f} s" for s, name in loop["slowest"][:3]) + ")")
        print(line)
    return targets


def write_figures(out: Path, meta: dict, results: list[dict], targets: dict | None = None) -> None:
    """``dataset_scale.json`` (figures and series) and the series as ``samples.parquet`` / ``health.parquet``."""
    (out / "dataset_scale.json").write_text(json.dumps({**meta, "results": results, "targets": targets}, indent=1,
                                                       default=str))
    samples, health = [], []
    for r in results:
        for phase in ("flow", "loop"):
            if phase in r:
                samples += [{"count": r["count"], "phase": phase, **s} for s in r[phase]["series"]["rss"]]
                health += [{"count": r["count"], "phase": phase, **h} for h in r[phase]["series"].get("health", [])]
    pd.DataFrame(samples).to_parquet(out / "samples.parquet", index=False)
    pd.DataFrame(health).to_parquet(out / "health.parquet", index=False)


def main() -> None:
    global CUT_PATHS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, nargs="+", action="extend",
                        help="dataset sizes, repeatable or a list (default: 200 2000)")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers of the flow = processes of the loop")
    parser.add_argument("--loop-count", type=int, nargs="*", action="extend",
                        help="sizes for which the plain loop runs too (default: the smallest size; the loop at "
                             "2,000 meshes doubles the run time); give it no value for none")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of the figures, logs and stores")
    parser.add_argument("--data", type=Path, default=None, help="where the datasets are built and kept "
                        "(default OUT/data; one folder per size, reused)")
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder (../shared/data)")
    parser.add_argument("--cut-paths", type=int, default=CUT_PATHS,
                        help="cut-augmentation paths of every mesh (default 0, the plain cut: the bench measures "
                             "the orchestration at scale; 8, the job's default, makes each mesh ~2.5x slower)")
    parser.add_argument("--keep", action="store_true", help="keep the stores of the flow and the loop")
    args = parser.parse_args()
    CUT_PATHS = args.cut_paths
    counts = sorted(set(args.count or [200, 2000]))
    loop_counts = set(counts[:1] if args.loop_count is None else args.loop_count)
    out = args.out.resolve()
    data = (args.data or out / "data").resolve()
    out.mkdir(parents=True, exist_ok=True)

    from flows.runtime.prefect_server import start_server

    meta = {"workers": args.workers, "resolution": RESOLUTION, "levels": LEVELS, "samples": SAMPLES,
            "cut_paths": CUT_PATHS,
            "cpus": os.cpu_count(), "counts": counts, "loop_counts": sorted(loop_counts)}
    results: list[dict] = []
    for count in counts:
        started = time.perf_counter()
        data_dir = build_dataset(data / f"meshes-{count}", count, args.shared)
        print(f"[{count}] dataset {data_dir} ready ({time.perf_counter() - started:.0f} s)", flush=True)
        result: dict = {"count": count, "data": str(data_dir), "loadavg": [os.getloadavg()[0]]}
        results.append(result)
        home = Path(tempfile.mkdtemp(prefix="brenier-dataset-scale-"))
        store = out / f"store-{count}"
        shutil.rmtree(store, ignore_errors=True)
        try:
            server = start_server(home)
            try:
                print(f"[{count}] flow on {args.workers} workers, Prefect API {server.api_url}", flush=True)
                flow = run_flow(data_dir, store, args.workers, server.api_url, server.process.pid,
                                out / f"flow-{count}.log")
            finally:
                server.stop()
                with contextlib.suppress(OSError):
                    shutil.copyfile(home / "server.log", out / f"server-{count}.log")
        finally:
            shutil.rmtree(home, ignore_errors=True)
        flow["meshes_per_min"] = 60 * count / flow["wall_s"]
        result["flow"] = flow
        result["loadavg"].append(os.getloadavg()[0])
        print(f"[{count}] flow: {flow['wall_s']:.1f} s, exit code {flow['exit_code']}, {flow['finished']} finished, "
              f"{flow['failed']} failed, peak RSS {flow['peak_rss_mb']:.0f} MB", flush=True)
        if flow["log_tail"]:
            print(f"[{count}] the CLI failed; end of {out / f'flow-{count}.log'}:\n{flow['log_tail']}", flush=True)
        write_figures(out, meta, results)
        if count in loop_counts:
            loop_store = out / f"loop-store-{count}"
            shutil.rmtree(loop_store, ignore_errors=True)
            print(f"[{count}] plain loop on {args.workers} processes", flush=True)
            loop = run_loop(data_dir, loop_store, args.workers)
            result["loop"] = loop
            result["overhead"] = (flow["wall_s"] - loop["wall_s"]) / loop["wall_s"]
            result["loadavg"].append(os.getloadavg()[0])
            print(f"[{count}] loop: {loop['wall_s']:.1f} s, peak RSS {loop['peak_rss_mb']:.0f} MB", flush=True)
            if not args.keep:
                shutil.rmtree(loop_store, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(store, ignore_errors=True)
        write_figures(out, meta, results)

    print(f"\ngeometry-images, resolution {RESOLUTION}, {LEVELS} levels, {SAMPLES} samples, "
          f"--cut-paths {CUT_PATHS}, {args.workers} workers; "
          f"{os.cpu_count()} CPUs; load average "
          + "; ".join(f"{r['count']}: " + " / ".join(f"{x:.1f}" for x in r["loadavg"]) for r in results)
          + " (before / after each run)\n")
    targets = print_report(results, args.workers)
    write_figures(out, meta, results, targets)
    print(f"\nfigures: {out / 'dataset_scale.json'}; series: {out / 'samples.parquet'}, {out / 'health.parquet'}")


if __name__ == "__main__":
    main()
