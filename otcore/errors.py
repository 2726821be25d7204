"""Typed errors raised by the math core. They carry no item names: tasks attach those."""

from __future__ import annotations

__all__ = ["GeometryError", "NonManifoldMeshError", "UnsupportedTopologyError", "OTConvergenceError", "FlippedMapError",
           "DeviceUnavailableError"]


class GeometryError(ValueError):
    """A mesh cannot be processed by a method; the message says why."""


class NonManifoldMeshError(GeometryError):
    """The mesh has non-manifold edges or vertices."""


class UnsupportedTopologyError(GeometryError):
    """The mesh's topology does not fit the method (e.g. several connected components)."""


class FlippedMapError(GeometryError):
    """A parameterization that must be bijective has flipped or degenerate triangles."""


class OTConvergenceError(RuntimeError):
    """An optimal-transport solver did not reach its tolerance."""


class DeviceUnavailableError(RuntimeError):
    """A torch device was requested explicitly (e.g. ``"cuda"``) but this process cannot use it."""
