"""Non-math helpers shared by the task modules (records and identities, the geometry-image pyramid step)."""
