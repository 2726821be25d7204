"""Entry points of the ``prefect.yaml`` deployments: brenier's flows on the Dask task runner of the CLI.

A deployment's flow run starts in a fresh process (``python -m prefect.engine``, launched by a process worker), so
the task runner is configured here from the run's environment (set per deployment under ``job_variables.env``):

- ``BRENIER_WORKERS``: LocalCluster workers (default: one per core);
- ``BRENIER_DASK_ADDRESS``: ``tcp://host:port`` of an existing Dask scheduler instead of a LocalCluster.

The worker exports ``PREFECT_API_URL`` to the run, so LocalCluster workers are processes (see
:func:`flows.runtime.task_runner.make_task_runner`). Flow names, parameters and their documentation are those of the
flows themselves.
"""

from __future__ import annotations

import os

from prefect_dask import DaskTaskRunner

from flows.autodecoder import autodecoder as _autodecoder
from flows.autodecoder import encode_shapes as _encode_shapes
from flows.gaussian_reduction import gaussian_reduction as _gaussian_reduction
from flows.geometry_image_sequence import geometry_image_sequence as _geometry_image_sequence
from flows.geometry_images import geometry_images as _geometry_images
from flows.restoration import train_restoration as _train_restoration
from flows.runtime.task_runner import make_task_runner

__all__ = ["geometry_images", "geometry_image_sequence", "autodecoder", "encode_shapes", "gaussian_reduction",
           "train_restoration", "task_runner_from_env"]


def task_runner_from_env() -> DaskTaskRunner:
    """The task runner of a deployed flow run, from ``BRENIER_WORKERS`` and ``BRENIER_DASK_ADDRESS``.

    Raises:
        ValueError: ``BRENIER_WORKERS`` is not a positive integer.
    """
    workers = os.environ.get("BRENIER_WORKERS") or None
    if workers is not None and (not workers.isdigit() or int(workers) < 1):
        raise ValueError(f"BRENIER_WORKERS must be a positive integer, got {workers!r}")
    return make_task_runner(int(workers) if workers else None, os.environ.get("BRENIER_DASK_ADDRESS") or None)


geometry_images = _geometry_images.with_options(task_runner=task_runner_from_env())
geometry_image_sequence = _geometry_image_sequence.with_options(task_runner=task_runner_from_env())
autodecoder = _autodecoder.with_options(task_runner=task_runner_from_env())
encode_shapes = _encode_shapes.with_options(task_runner=task_runner_from_env())
gaussian_reduction = _gaussian_reduction.with_options(task_runner=task_runner_from_env())
train_restoration = _train_restoration.with_options(task_runner=task_runner_from_env())
