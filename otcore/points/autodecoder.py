"""Point-cloud autodecoders: NeuralQAAD's shared-weight patch foldings and an AtlasNetV2-style baseline.

NeuralQAAD (Wagner & Schwanecke, VISAPP 2022, Sec. 3.1): every shape of a collection is a latent code ``z`` in a
lookup table (autodecoding: no encoder); a trainable input cloud ``Q`` is split into ``K`` patches by a balanced k-d
tree and each patch is folded onto the shape by an MLP of ``(q, z)``. The MLP's first layers are shared by all
patches (paper: 256-128-128-64-3 with SELU, first four layers shared), only the last layer is per patch, which
lets the network be deep and wide at a fraction of AtlasNetV2's parameters. As in the paper's folding, the
per-patch layer sees the shared features *and* ``q_i`` again (``refeed_points=True``; ``False`` is the earlier
features-only head). The AtlasNetV2 baseline (Deprelle et al., NeurIPS 2019, patch-deformation variant) gives
every patch its own, independent MLP; the paper configures it with fewer patches and 4 hidden layers of width 128
(:data:`ATLASNETV2_HIDDEN`), which is the default here; ``width=`` gives the earlier width-matched variant.
:class:`PointNetEncoder` (Qi et al., CVPR 2017) maps a shape's points to a code; the paper trains one during the
Chamfer phase to initialise the latent table (:mod:`otcore.points.autodecoder_training`).

Both models evaluate all patches in one grouped op: points are laid out ``[B, K, s]`` (``s`` points per patch)
and per-patch weights ``[K, in, out]`` are applied with one batched matmul, never a Python loop over patches.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = [
    "ATLASNETV2_HIDDEN",
    "PointNetEncoder",
    "PatchLayout",
    "patch_layout",
    "NeuralQAADDecoder",
    "AtlasNetV2Decoder",
    "Autodecoder",
    "count_parameters",
    "matched_baseline_width",
]


ATLASNETV2_HIDDEN = (128, 128, 128, 128)  # the paper's AtlasNetV2 baseline: 4 hidden layers of width 128 per patch


class PatchLayout:
    """Assignment of the ``M`` input points to ``K`` patches, padded to a regular ``[K, m]`` grid.

    Attributes:
        index: int64 ``[K, m]`` point indices per patch; patches shorter than ``m`` repeat their last point.
        valid: bool ``[K, m]``, False on the padding repeats.
    """

    def __init__(self, index: torch.Tensor, valid: torch.Tensor):
        self.index = index
        self.valid = valid

    @property
    def n_patches(self) -> int:
        return int(self.index.shape[0])

    def flat_index(self) -> torch.Tensor:
        """int64 ``[M]``: the valid entries of :attr:`index`, patch by patch (the order decoded clouds use)."""
        return self.index[self.valid]


def patch_layout(points: torch.Tensor, n_patches: int) -> PatchLayout:
    """Split ``points`` ``[M, 3]`` into ``n_patches`` (a power of two) patches with a balanced k-d tree.

    Raises:
        ValueError: if ``n_patches`` is not a power of two or exceeds ``M``.
    """
    from otcore.kd_tree import kd_partition

    m_points = int(points.shape[0])
    if n_patches < 1 or n_patches & (n_patches - 1) or n_patches > m_points:
        raise ValueError(f"n_patches must be a power of two <= the point count {m_points}, got {n_patches}")
    partition = kd_partition(points.detach().cpu(), leaf_size=math.ceil(m_points / n_patches))
    if partition.n_leaves != n_patches:
        raise ValueError(f"k-d split gave {partition.n_leaves} leaves for {n_patches} patches")
    sizes = partition.sizes
    width = int(sizes.max())
    rank = torch.arange(width).unsqueeze(0)
    valid = rank < sizes.unsqueeze(1)
    position = partition.offsets[:-1].unsqueeze(1) + torch.minimum(rank, (sizes - 1).unsqueeze(1))
    return PatchLayout(partition.order[position], valid)


class _GroupedLinear(nn.Module):
    """``K`` independent linear maps applied to ``[B, K, s, in]`` in one batched matmul."""

    def __init__(self, groups: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(groups, in_features, out_features).normal_(0.0, in_features**-0.5))
        self.bias = nn.Parameter(torch.zeros(groups, 1, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, groups, s, width = x.shape
        flat = x.transpose(0, 1).reshape(groups, batch * s, width)
        out = torch.baddbmm(self.bias, flat, self.weight)
        return out.reshape(groups, batch, s, -1).transpose(0, 1)


class NeuralQAADDecoder(nn.Module):
    """NeuralQAAD folding decoder: shared layers for all patches, a per-patch last layer.

    Args:
        n_patches: ``K``.
        latent_size: ``l``, length of each shape's code.
        hidden: widths of the shared layers (paper: 256, 128, 128, 64); the last layer maps to 3 per patch.
        refeed_points: the per-patch layer takes ``[features, q_i]`` (``hidden[-1] + 3`` inputs), as the paper's
            folding re-feeds ``q_i``; False: features only (the earlier head).
    """

    def __init__(self, n_patches: int, latent_size: int, hidden: tuple[int, ...] = (256, 128, 128, 64),
                 refeed_points: bool = True):
        super().__init__()
        self.refeed_points = refeed_points
        # the first layer is split into its point and latent parts: the latent part is the same for every point of
        # a shape, so it is computed once per shape instead of once per point (same function, less work)
        self.point_in = nn.Linear(3, hidden[0])
        self.latent_in = nn.Linear(latent_size, hidden[0], bias=False)
        self.shared = nn.ModuleList(nn.Linear(a, b) for a, b in zip(hidden[:-1], hidden[1:], strict=True))
        self.head = _GroupedLinear(n_patches, hidden[-1] + (3 if refeed_points else 0), 3)
        self.activation = nn.SELU()
        _lecun_normal_(self.point_in.weight, self.latent_in.weight, fan_in=3 + latent_size)
        nn.init.zeros_(self.point_in.bias)
        for layer in self.shared:
            _lecun_normal_(layer.weight, fan_in=layer.in_features)
            nn.init.zeros_(layer.bias)

    def forward(self, points: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Fold ``points`` ``[B, K, s, 3]`` with codes ``latents`` ``[B, l]`` into ``[B, K, s, 3]``."""
        h = self.point_in(points) + self.latent_in(latents)[:, None, None, :]
        h = self.activation(h)
        for layer in self.shared:
            h = self.activation(layer(h))
        if self.refeed_points:
            h = torch.cat([h, points], dim=-1)
        return self.head(h)


class AtlasNetV2Decoder(nn.Module):
    """AtlasNetV2 baseline: one independent MLP per patch (no sharing), SELU, evaluated as grouped matmuls.

    Args:
        n_patches: ``K``.
        latent_size: ``l``.
        width: None (default) for ``hidden``; a number ``w`` for the earlier width-matched shape
            ``w, w/2, w/2, w/4`` (NeuralQAAD's 256-128-128-64 scaled down, see :func:`matched_baseline_width`).
        hidden: hidden widths when ``width`` is None (default :data:`ATLASNETV2_HIDDEN`, the paper's 4 x 128).
    """

    def __init__(self, n_patches: int, latent_size: int, width: int | None = None,
                 hidden: tuple[int, ...] = ATLASNETV2_HIDDEN):
        super().__init__()
        hidden = _baseline_hidden(width) if width is not None else tuple(hidden)
        self.point_in = _GroupedLinear(n_patches, 3, hidden[0])
        self.latent_in = nn.Parameter(torch.empty(n_patches, latent_size, hidden[0]))
        _lecun_normal_(self.point_in.weight, self.latent_in, fan_in=3 + latent_size)
        self.layers = nn.ModuleList(_GroupedLinear(n_patches, a, b) for a, b in zip(hidden, hidden[1:] + (3,)))
        self.activation = nn.SELU()

    def forward(self, points: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Fold ``points`` ``[B, K, s, 3]`` with codes ``latents`` ``[B, l]`` into ``[B, K, s, 3]``."""
        latent_part = torch.einsum("bl,klo->bko", latents, self.latent_in)[:, :, None, :]
        h = self.activation(self.point_in(points) + latent_part)
        for layer in self.layers[:-1]:
            h = self.activation(layer(h))
        return self.layers[-1](h)


class PointNetEncoder(nn.Module):
    """PointNet encoder (Qi et al., CVPR 2017, without the transform nets): a shared per-point MLP, max-pooling
    over the points, then a linear map to a code.

    NeuralQAAD trains one in the Chamfer phase so that the latent table starts from codes that already separate
    the shapes, then continues by autodecoding (the table is optimised directly, the encoder is dropped and is not
    part of the compressed model).

    Args:
        latent_size: ``l``.
        hidden: widths of the per-point layers (default 64, 128, 256; SELU).
    """

    def __init__(self, latent_size: int, hidden: tuple[int, ...] = (64, 128, 256)):
        super().__init__()
        widths = (3,) + tuple(hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.out = nn.Linear(widths[-1], latent_size)
        self.activation = nn.SELU()
        for layer in self.layers:
            _lecun_normal_(layer.weight, fan_in=layer.in_features)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.out.weight, 0.0, 0.01 * widths[-1] ** -0.5)
        nn.init.zeros_(self.out.bias)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, l]`` of point sets ``[B, S, 3]`` (float; invariant to the order of the ``S`` points)."""
        h = points
        for layer in self.layers:
            h = self.activation(layer(h))
        return self.out(h.amax(dim=1))


def _lecun_normal_(*weights: torch.Tensor, fan_in: int) -> None:
    """LeCun-normal initialisation (std ``1/sqrt(fan_in)``, the one SELU's self-normalisation assumes; Klambauer et
    al. 2017); weights that together form one layer (a split first layer) share the layer's full ``fan_in``."""
    with torch.no_grad():
        for weight in weights:
            weight.normal_(0.0, fan_in**-0.5)


def _baseline_hidden(width: int) -> tuple[int, ...]:
    return (width, max(width // 2, 1), max(width // 2, 1), max(width // 4, 1))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def matched_baseline_width(n_patches: int, latent_size: int, hidden: tuple[int, ...] = (256, 128, 128, 64)) -> int:
    """Width ``w`` of :class:`AtlasNetV2Decoder` whose parameter count is closest to the NeuralQAAD decoder's."""
    target = count_parameters(NeuralQAADDecoder(n_patches, latent_size, hidden))

    def params(w: int) -> int:
        widths = (3 + latent_size,) + _baseline_hidden(w) + (3,)
        # the latent part of the first layer has no bias (it is shared with the point part's bias)
        per_patch = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
        return n_patches * per_patch

    return min(range(4, 4096), key=lambda w: abs(params(w) - target))


class Autodecoder(nn.Module):
    """Latent lookup table + trainable input cloud + folding decoder: the whole compressed representation.

    Args:
        n_shapes: ``N``, rows of the latent table.
        latent_size: ``l``.
        init_points: float32 ``[M, 3]`` initial input cloud ``Q`` (a sample of the dataset, as in the paper).
        n_patches: ``K`` (power of two).
        architecture: ``"neuralqaad"`` or ``"atlasnetv2"``.
        seed: seeds the parameter initialisation.
        refeed_points: NeuralQAAD's per-patch layer re-takes ``q_i`` (:class:`NeuralQAADDecoder`).
        baseline_hidden: hidden widths of each AtlasNetV2 patch MLP (default the paper's 4 x 128); an ``int`` is
            the earlier width-matched shape (:func:`matched_baseline_width`).

    Raises:
        ValueError: unknown architecture, bad patch count.
    """

    def __init__(
        self,
        n_shapes: int,
        latent_size: int,
        init_points: np.ndarray | torch.Tensor,
        n_patches: int,
        architecture: str = "neuralqaad",
        seed: int = 0,
        refeed_points: bool = True,
        baseline_hidden: tuple[int, ...] | int = ATLASNETV2_HIDDEN,
    ):
        super().__init__()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            points = torch.as_tensor(np.asarray(init_points), dtype=torch.float32)
            self.architecture = architecture
            self.refeed_points = bool(refeed_points)
            self.baseline_hidden = baseline_hidden if isinstance(baseline_hidden, int) else tuple(baseline_hidden)
            self.latents = nn.Parameter(0.01 * torch.randn(n_shapes, latent_size))
            self.input_points = nn.Parameter(points.clone())
            layout = patch_layout(points, n_patches)
            self.register_buffer("patch_index", layout.index)
            self.register_buffer("patch_valid", layout.valid)
            if architecture == "neuralqaad":
                self.decoder: nn.Module = NeuralQAADDecoder(n_patches, latent_size, refeed_points=refeed_points)
            elif architecture == "atlasnetv2":
                if isinstance(baseline_hidden, int):
                    self.decoder = AtlasNetV2Decoder(n_patches, latent_size, width=baseline_hidden)
                else:
                    self.decoder = AtlasNetV2Decoder(n_patches, latent_size, hidden=tuple(baseline_hidden))
            else:
                raise ValueError(f"unknown architecture {architecture!r} (expected 'neuralqaad' or 'atlasnetv2')")
        finally:
            torch.random.set_rng_state(generator_state)

    @property
    def n_points(self) -> int:
        return int(self.input_points.shape[0])

    @property
    def n_patches(self) -> int:
        return int(self.patch_index.shape[0])

    @property
    def latent_size(self) -> int:
        return int(self.latents.shape[1])

    def layout(self) -> PatchLayout:
        return PatchLayout(self.patch_index, self.patch_valid)

    def decode_points(self, point_index: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Outputs for chosen input points: ``point_index`` int64 ``[B, K, s]`` (each row inside its patch),
        ``latents`` ``[B, l]`` -> float ``[B, K, s, 3]``."""
        return self.decoder(self.input_points[point_index], latents)

    def decode(self, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        """Full decoded clouds ``[B, M, 3]``; row ``i`` is the image of input point ``i`` (the input order)."""
        layout = self.layout()
        flat = layout.flat_index()
        outputs = []
        for start in range(0, latents.shape[0], chunk):
            z = latents[start : start + chunk]
            index = layout.index.unsqueeze(0).expand(z.shape[0], -1, -1)
            folded = self.decode_points(index, z)[:, layout.valid]
            out = torch.empty_like(folded)
            out[:, flat] = folded
            outputs.append(out)
        return torch.cat(outputs)

    def stored_floats(self) -> tuple[int, int]:
        """(network floats incl. the input cloud, latent floats): what a compressed collection must store."""
        network = sum(p.numel() for name, p in self.named_parameters() if name != "latents")
        return network, self.latents.numel()
