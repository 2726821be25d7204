"""Prefect task of the embedding-alignment job: train a HOTS3D spherical OT map from one set of unit vectors to
another, map the source, measure the distance between the distributions before and after.

Arrays go to the item's Zarr group ``<store>/<run_id>/<source_id>__<target_id>``: ``mapped`` [N, d] float32
(the mapped source vectors), ``potential/*`` and ``dual/*`` (the two ICNNs' parameters, with the architecture in
the group attributes: ``otcore.ot.icnn.ICNN(dim, hidden, layers).load_state_dict`` restores the map). The task
returns the metric row and failure rows; bad input becomes a failure row, never an exception.
"""

from __future__ import annotations

import numpy as np
import torch
from prefect import task

from otcore.device import resolve_device
from otcore.ot.spherical_ot import SphericalOTConfig, energy_distance, spherical_cost, train_spherical_ot
from storage.embeddings import read_embeddings
from storage.errors import InputError
from storage.zarr_store import ItemStore
from tasks.configs import AlignmentConfig
from tasks.shared.records import ItemResult, failure_row

__all__ = ["AlignmentConfig", "align_embedding_sets", "ALIGNMENT_VERSION"]

ALIGNMENT_VERSION = AlignmentConfig.PIPELINE_VERSION



@task(name="align-embedding-sets", retries=1, retry_delay_seconds=2)
def align_embedding_sets(source_uri: str, target_uri: str, store: str, run_id: str,
                         config: AlignmentConfig) -> ItemResult:
    """Align ``source_uri``'s vectors to ``target_uri``'s (HOTS3D, :mod:`otcore.ot.spherical_ot`).

    Returns:
        The pair's :class:`ItemResult` (table ``embedding_alignment``: one row, or none when the input is bad).
    """
    item_id = "pair"
    try:
        source = read_embeddings(source_uri)
        item_id = source.set_id
        target = read_embeddings(target_uri)
        item_id = f"{source.set_id}__{target.set_id}"
        if source.vectors.shape[1] != target.vectors.shape[1]:
            raise InputError(item_id, f"source has d={source.vectors.shape[1]}, target d={target.vectors.shape[1]}")
    except InputError as error:
        return ItemResult(item_id, failures=[failure_row(run_id, item_id, source_uri, "read", error)])
    fingerprint = config.fingerprint(source.sha256, target.sha256)
    item_store = ItemStore(store, run_id, item_id)
    if item_store.is_complete(fingerprint):
        return ItemResult(item_id, {"embedding_alignment": item_store.completed_rows()},
                          item_store.completed_failures(), skipped=True)
    device = resolve_device(config.device)
    item_store.begin(fingerprint, {"source_uri": source_uri, "target_uri": target_uri, "config": config.model_dump(),
                                   "version": ALIGNMENT_VERSION, "dim": int(source.vectors.shape[1]),
                                   "method": "HOTS3D spherical OT, cost -log((1+<x,y>)/2)"})
    ot_config = SphericalOTConfig(hidden=config.hidden, layers=config.layers, steps=config.steps,
                                  inner_steps=config.inner_steps, batch_size=config.batch_size, lr=config.lr,
                                  seed=config.seed)
    result = train_spherical_ot(source.vectors, target.vectors, ot_config, device=device)
    mapped = result.map.transport(source.vectors)
    item_store.write_array("mapped", mapped.astype(np.float32))
    for name, module in (("potential", result.map.potential), ("dual", result.dual)):
        for key, value in module.state_dict().items():
            item_store.write_array(f"{name}/{key}", value.detach().cpu().numpy())
    x = torch.as_tensor(source.vectors, dtype=torch.float64)
    cosine = np.clip((mapped * source.vectors).sum(1), -1.0, 1.0)
    before = energy_distance(source.vectors, target.vectors, config.distance_points, config.seed)
    after = energy_distance(mapped, target.vectors, config.distance_points, config.seed)
    row = {
        "run_id": run_id, "item_id": item_id, "source_id": source.set_id, "target_id": target.set_id,
        "source_uri": source_uri, "target_uri": target_uri, "source_sha256": source.sha256,
        "target_sha256": target.sha256, "n_source": len(source.vectors), "n_target": len(target.vectors),
        "dim": int(source.vectors.shape[1]), "energy_distance_before": before, "energy_distance_after": after,
        "reduction": before / after if after > 0 else float("inf"),
        "mean_cost": float(spherical_cost(x, torch.as_tensor(mapped)).mean()),
        "mean_angle_deg": float(np.degrees(np.arccos(cosine)).mean()),
        "steps": config.steps, "hidden": config.hidden, "layers": config.layers,
        "train_seconds": result.seconds, "device": str(device),
    }
    item_store.finish([row], [])
    return ItemResult(item_id, {"embedding_alignment": [row]})
