"""Runtime of the pipelines: the CLI, the managed Prefect server, the Dask task runner, deployments, UI artifacts."""
