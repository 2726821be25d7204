"""Neural restoration of geometry images: one network, trained across meshes, that restores a full-resolution
geometry image from a coarse mipmap level at any output resolution (the "neural" half of Neural Geometry Images
with OT, Gao et al. 2025, arXiv 2511.18679).

Architecture: a **local implicit image function** (LIIF, Chen, Liu, Wang, "Learning Continuous Image
Representation with Local Implicit Image Function", CVPR 2021) made rigid-motion equivariant for positions:

- *Encoder*: per coarse sample ``c`` a local frame ``F_c`` (rows: unit u-tangent, bitangent, unit normal, from
  central differences of the grid) and scale ``s_c`` (mean grid edge length). The features are the positions of
  the ``window x window`` neighbours relative to ``c``, expressed in ``F_c`` and divided by ``s_c``, plus
  ``log s_c`` and a border flag: invariant to translation and rotation of the shape by construction. A 1x1
  embedding and residual 3x3 convolutions (EDSR-style blocks without batch norm) turn them into a latent grid.
- *Decoder*: a query ``q`` in ``[0,1]^2`` reads the latents of its 4 surrounding coarse samples (LIIF's local
  ensemble, weights = bilinear weights) with its offset ``delta`` to each (in coarse cells) and the output cell
  size (LIIF's cell decoding); an MLP returns a displacement ``d`` in the sample's frame, and
  ``p(q) = bicubic(q) + sum_c w_c(q) s_c F_c^T d_c``.

The base is bicubic interpolation (Keys' cubic convolution, ``a = -0.75``, ``align_corners=True``; on the
pipeline's OT geometry images it has about half the Chamfer distance of bilinear upsampling). With the MLP's last
layer at zero the network is exactly that interpolation, which is the initialisation; it only learns what the
interpolation misses. Rotating or translating the input
rotates or translates the output (tested), so 3D rotation augmentation is built in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["RestorationConfig", "RestorationNetwork", "local_frames", "cubic_sample", "grid_queries",
           "restore_neural"]

_EPS = 1e-12


@dataclass(frozen=True)
class RestorationConfig:
    """Shape of a :class:`RestorationNetwork`.

    Attributes:
        window: side of the neighbourhood whose relative positions are the encoder's input (odd).
        width: latent channels of the encoder.
        blocks: residual 3x3 convolution blocks of the encoder.
        decoder_width: hidden width of the decoder MLP (two hidden layers).
    """

    window: int = 5
    width: int = 24
    blocks: int = 1
    decoder_width: int = 32

    def __post_init__(self) -> None:
        if self.window < 3 or self.window % 2 == 0:
            raise ValueError(f"window must be odd and >= 3, got {self.window}")
        if min(self.width, self.decoder_width) < 1 or self.blocks < 0:
            raise ValueError(f"width, decoder_width must be >= 1 and blocks >= 0, got {self}")


def local_frames(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample orthonormal frames and scales of a batch of geometry images.

    Args:
        images: ``[B, 3, h, w]`` float positions.

    Returns:
        ``frames`` ``[B, h, w, 3, 3]`` (rows: unit u-tangent, bitangent, unit normal; zero rows where the grid is
        degenerate) and ``scales`` ``[B, h, w]`` (mean length of the u and v central differences, > 0).
    """
    padded = nn.functional.pad(images, (1, 1, 1, 1), mode="replicate")
    tangent_u = (padded[:, :, 1:-1, 2:] - padded[:, :, 1:-1, :-2]).permute(0, 2, 3, 1) / 2
    tangent_v = (padded[:, :, 2:, 1:-1] - padded[:, :, :-2, 1:-1]).permute(0, 2, 3, 1) / 2
    length_u, length_v = tangent_u.norm(dim=-1), tangent_v.norm(dim=-1)
    e1 = tangent_u / (length_u[..., None] + _EPS)
    normal = torch.linalg.cross(tangent_u, tangent_v)
    normal = normal / (normal.norm(dim=-1, keepdim=True) + _EPS)
    e2 = torch.linalg.cross(normal, e1)
    scales = (length_u + length_v) / 2
    scales = torch.where(scales > 0, scales, scales[scales > 0].min() if (scales > 0).any() else 1.0)
    return torch.stack([e1, e2, normal], dim=-2), scales


class RestorationNetwork(nn.Module):
    """LIIF restoration of a coarse geometry image (module docstring). Positions in any consistent unit (the
    pipeline's: unit bounding-box diagonal); the network is trained on and meant for square OT geometry images.
    """

    def __init__(self, config: RestorationConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or RestorationConfig()
        features = 3 * (config.window**2 - 1) + 2
        self.embed = nn.Conv2d(features, config.width, 1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(config.width, config.width, 3, padding=1, padding_mode="replicate"), nn.GELU(),
                          nn.Conv2d(config.width, config.width, 3, padding=1, padding_mode="replicate"))
            for _ in range(config.blocks))
        self.decoder = nn.Sequential(
            nn.Linear(config.width + 3, config.decoder_width), nn.GELU(),
            nn.Linear(config.decoder_width, config.decoder_width), nn.GELU(),
            nn.Linear(config.decoder_width, 3))
        nn.init.zeros_(self.decoder[-1].weight)  # starts as bicubic interpolation exactly
        nn.init.zeros_(self.decoder[-1].bias)

    def encode(self, coarse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latent grid of a batch of coarse images ``[B, 3, h, w]``: ``(latents [B, width, h, w], frames, scales)``."""
        batch, _, height, width = coarse.shape
        frames, scales = local_frames(coarse)
        radius = self.config.window // 2
        padded = nn.functional.pad(coarse, (radius,) * 4, mode="replicate")
        windows = nn.functional.unfold(padded, self.config.window).view(batch, 3, self.config.window**2, height, width)
        centre = self.config.window**2 // 2
        relative = torch.cat([windows[:, :, :centre], windows[:, :, centre + 1:]], dim=2) - coarse[:, :, None]
        local = torch.einsum("bhwij,bjkhw->bikhw", frames, relative) / scales[:, None, None]
        border = torch.zeros(batch, 1, height, width, dtype=coarse.dtype, device=coarse.device)
        border[..., 0, :] = border[..., -1, :] = border[..., :, 0] = border[..., :, -1] = 1.0
        features = torch.cat([local.reshape(batch, -1, height, width), torch.log(scales)[:, None], border], dim=1)
        latents = self.embed(features)
        for block in self.blocks:
            latents = latents + block(nn.functional.gelu(latents))
        return latents, frames, scales

    def forward(self, coarse: torch.Tensor, queries: torch.Tensor, cell: float | torch.Tensor) -> torch.Tensor:
        """Positions at continuous grid coordinates.

        Args:
            coarse: ``[B, 3, h, w]`` float coarse geometry images (``h, w >= 2``).
            queries: ``[B, Q, 2]`` float ``(u, v)`` in ``[0, 1]^2`` (u along columns, v along rows; the corners of
                the square are the corner samples, as with ``align_corners=True``).
            cell: output sample spacing in coarse cells, ``(h - 1) / (R - 1)`` for an ``R x R`` output; a float
                or ``[B]``.

        Returns:
            ``[B, Q, 3]`` positions, same units as ``coarse``.
        """
        batch, _, height, width = coarse.shape
        latents, frames, scales = self.encode(coarse)
        grid = queries * torch.tensor([width - 1, height - 1], dtype=queries.dtype, device=queries.device)
        base = torch.stack([grid[..., 0].floor().clamp(0, width - 2), grid[..., 1].floor().clamp(0, height - 2)], -1)
        fraction = grid - base
        cell = torch.as_tensor(cell, dtype=coarse.dtype, device=coarse.device).expand(batch)
        flat_latents = latents.flatten(2).transpose(1, 2)  # [B, h w, C]
        flat_frames, flat_scales = frames.flatten(1, 2), scales.flatten(1)
        output = cubic_sample(coarse, queries)
        for dx in (0, 1):
            for dy in (0, 1):
                corner = base + torch.tensor([dx, dy], dtype=base.dtype, device=base.device)
                index = (corner[..., 1] * width + corner[..., 0]).long()  # [B, Q]
                weight = ((fraction[..., 0] if dx else 1 - fraction[..., 0])
                          * (fraction[..., 1] if dy else 1 - fraction[..., 1]))
                take = index[..., None]
                latent = torch.gather(flat_latents, 1, take.expand(-1, -1, flat_latents.shape[-1]))
                offset = grid - corner
                inputs = torch.cat([latent, offset, cell[:, None, None].expand(-1, queries.shape[1], 1)], -1)
                displacement = self.decoder(inputs)  # [B, Q, 3] in the corner's frame, in its scales
                frame = torch.gather(flat_frames, 1, take[..., None].expand(-1, -1, 3, 3))
                scale = torch.gather(flat_scales, 1, index)
                world = torch.einsum("bqji,bqj->bqi", frame, displacement) * scale[..., None]
                output = output + weight[..., None] * world
        return output

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def cubic_sample(images: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Bicubic samples of ``[B, C, h, w]`` images at ``[B, Q, 2]`` ``(u, v)`` in ``[0, 1]^2``: ``[B, Q, C]``.

    ``grid_sample``'s cubic convolution (``a = -0.75``) with ``align_corners=True`` and border padding, so the
    weights sum to one (the result moves with a rigid motion of the positions).
    """
    grid = (queries * 2 - 1)[:, :, None, :]
    sampled = nn.functional.grid_sample(images, grid, mode="bicubic", padding_mode="border", align_corners=True)
    return sampled[..., 0].transpose(1, 2)


def grid_queries(resolution: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[R * R, 2]`` ``(u, v)`` of an ``R x R`` grid over ``[0, 1]^2``, row-major (v rows, u columns)."""
    axis = torch.linspace(0.0, 1.0, resolution, dtype=dtype)
    v, u = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([u.ravel(), v.ravel()], -1)


@torch.no_grad()
def restore_neural(network: RestorationNetwork, level_image: np.ndarray, resolution: int,
                   chunk: int = 65_536) -> np.ndarray:
    """Restore a coarse ``[3, h, w]`` geometry image to ``[3, resolution, resolution]`` float32 with ``network``.

    ``resolution`` may be any integer >= 2 (continuous level of detail), not only ``2^n + 1``. Queries are
    decoded in chunks of ``chunk`` to bound memory.

    Raises:
        ValueError: if the image is not ``[3, h, w]`` with ``h, w >= 2`` or holds non-finite values.
    """
    image = np.asarray(level_image, dtype=np.float32)
    if image.ndim != 3 or image.shape[0] != 3 or min(image.shape[1:]) < 2:
        raise ValueError(f"expected a [3, h, w] geometry image with h, w >= 2, got {image.shape}")
    if not np.isfinite(image).all():
        raise ValueError("geometry image has non-finite values")
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    network.eval()
    parameter = next(network.parameters())
    coarse = torch.from_numpy(image)[None].to(parameter)
    queries = grid_queries(resolution).to(parameter)
    cell = (image.shape[-1] - 1) / (resolution - 1)
    parts = [network(coarse, queries[None, start:start + chunk], cell)[0] for start in range(0, len(queries), chunk)]
    return torch.cat(parts).T.reshape(3, resolution, resolution).float().cpu().numpy()

