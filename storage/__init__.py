"""Where bytes live: dataset readers, the run's Zarr store and the Parquet metric tables.

Modules: :mod:`storage.errors` (typed input errors), :mod:`storage.inputs` (checked reading of one input file:
name, file type, size limit, format sniffing), :mod:`storage.meshes` (mesh datasets),
:mod:`storage.zarr_store` (per-item Zarr groups), :mod:`storage.tables` (Parquet schemas and I/O).
"""
