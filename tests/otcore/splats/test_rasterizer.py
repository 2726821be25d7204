"""otcore.splats (rasterizer, cameras, spherical_harmonics, image_metrics, scene): the torch 3DGS renderer
against analytic images and a plain per-pixel reference, its
gradients, orbit cameras and image metrics on the bundled donut-8k scene."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from otcore.splats.cameras import Camera, look_at, orbit_cameras
from otcore.splats.image_metrics import psnr, ssim
from otcore.splats.rasterizer import FrozenGeometryView, hit_counts, render
from otcore.splats.scene import render_scene, scene_tensors
from otcore.splats.spherical_harmonics import SH_C0, _sh_basis, eval_sh, sh0_to_rgb
from storage.gaussians import GaussianScene, read_scene

DONUT = Path(__file__).resolve().parents[3] / "data" / "samples" / "gaussians" / "donut-8k.ply"


def _tensors(scene: GaussianScene) -> dict[str, torch.Tensor]:
    return scene_tensors(scene.means, scene.scales, scene.quats, scene.opacities, scene.sh_dc, scene.sh_rest)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Single-threaded torch: these renders are many small ops, which two intra-op threads only slow down on a
    shared 2-core machine (each op waits for the descheduled second thread). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def donut() -> GaussianScene:
    return read_scene(str(DONUT))


@pytest.fixture(scope="module")
def donut_params(donut: GaussianScene) -> dict[str, torch.Tensor]:
    return _tensors(donut)


def head_on_camera(width: int, height: int, focal: float, cx: float, cy: float) -> Camera:
    """Camera at the origin looking down +z (viewmat = identity)."""
    k = torch.tensor([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])
    return Camera(torch.eye(4), k, width, height)


def pixel_centres(width: int, height: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype), indexing="ij")
    return xs + 0.5, ys + 0.5


def quat_z(angle: float) -> list[float]:
    """Quaternion ``w x y z`` of a rotation by ``angle`` about z."""
    return [math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)]


# ---------------------------------------------------------------------------------------------------------------------
# 1. analytic single Gaussian


@pytest.mark.parametrize(
    ("scale_xy", "angle", "opacity"),
    [((0.05, 0.05), 0.0, 0.8), ((0.09, 0.03), math.radians(30.0), 1.0)],
    ids=["isotropic", "anisotropic-rotated-opaque"],
)
def test_single_gaussian_matches_analytic_profile(scale_xy: tuple[float, float], angle: float, opacity: float) -> None:
    width, height, focal, depth = 33, 33, 40.0, 2.0
    cam = head_on_camera(width, height, focal, 16.5, 16.5)  # the mean lands on the centre of pixel (16, 16)
    colour = torch.tensor([[1.0, 0.5, 0.25]])
    background = torch.tensor([0.2, 0.3, 0.4])
    image, alpha = render(
        torch.tensor([[0.0, 0.0, depth]]),
        torch.tensor([quat_z(angle)]) * 3.0,  # unnormalised on purpose
        torch.tensor([[scale_xy[0], scale_xy[1], 0.07]]),
        torch.tensor([opacity]),
        colour,
        cam,
        background=background,
        return_alpha=True,
    )
    # head-on at the optical axis: Σ2D = (f/z)² R diag(sx², sy²) Rᵀ + 0.3 I exactly
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    cov = (focal / depth) ** 2 * rot @ torch.diag(torch.tensor(scale_xy, dtype=torch.float64) ** 2) @ rot.T
    cov = cov + 0.3 * torch.eye(2, dtype=torch.float64)
    xs, ys = pixel_centres(width, height)
    d = torch.stack([xs - 16.5, ys - 16.5], -1)
    maha = torch.einsum("hwi,ij,hwj->hw", d, torch.linalg.inv(cov), d)
    expected_alpha = (opacity * torch.exp(-0.5 * maha)).clamp_max(0.99)
    expected_alpha = torch.where(expected_alpha >= 1 / 255, expected_alpha, 0.0)
    expected = expected_alpha[..., None] * colour.double() + (1 - expected_alpha[..., None]) * background.double()

    assert image.shape == (height, width, 3) and alpha.shape == (height, width)
    assert image.dtype == torch.float32
    np.testing.assert_allclose(alpha.numpy(), expected_alpha.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(image.numpy(), expected.numpy(), atol=1e-4, rtol=0)
    assert divmod(int(alpha.argmax()), width) == (16, 16)
    assert alpha[16, 16] == pytest.approx(min(opacity, 0.99), abs=1e-6)  # alpha is clamped at 0.99
    # the support ends exactly where alpha < 1/255 (the culling box does not cut it short; skipped splats add
    # exp(-30) ~ 1e-13 instead of an exact 0)
    assert int((alpha > 1e-9).sum()) == int((expected_alpha > 0).sum()) > 9
    assert float(alpha[expected_alpha == 0].max()) < 1e-12


# ---------------------------------------------------------------------------------------------------------------------
# 2. occlusion order


def test_front_gaussian_occludes_and_input_order_does_not_matter() -> None:
    cam = head_on_camera(24, 24, 30.0, 12.5, 12.5)  # pixel (12, 12) centre on the axis
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0]])  # red in front of green
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 2)
    scales = torch.tensor([[0.08, 0.08, 0.08], [0.12, 0.12, 0.12]])
    opacities = torch.tensor([0.9, 0.7])
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    image = render(means, quats, scales, opacities, colours, cam)
    # centre pixel: alpha_front = 0.9, alpha_back = 0.7, T_back = 0.1
    np.testing.assert_allclose(image[12, 12].numpy(), [0.9, 0.1 * 0.7, 0.0], atol=1e-5)
    swap = [1, 0]
    swapped = render(means[swap], quats[swap], scales[swap], opacities[swap], colours[swap], cam)
    torch.testing.assert_close(swapped, image, atol=1e-7, rtol=0)
    # moving green in front of red flips which colour dominates the centre
    moved = means.clone()
    moved[1, 2] = 1.5
    flipped = render(moved, quats, scales, opacities, colours, cam)
    assert flipped[12, 12, 1] > 0.6 and flipped[12, 12, 0] < 0.35


# ---------------------------------------------------------------------------------------------------------------------
# 3. tiled renderer == plain dense per-pixel renderer


def reference_render(
    means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor, colours: torch.Tensor,
    cam: Camera, background: torch.Tensor, near: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Every Gaussian at every pixel, sorted by depth, composited one Gaussian at a time (float64, no tiles).

    Returns the image ``[H, W, 3]``, the alpha ``[H, W]`` and where compositing stopped at ``T < 1e-4`` ``[H, W]``.
    """
    f64 = torch.float64
    means, quats, scales, opacities, colours = (t.to(f64) for t in (means, quats, scales, opacities, colours))
    view, k = cam.viewmat.to(f64), cam.K.to(f64)
    width, height = cam.width, cam.height
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    xs, ys = pixel_centres(width, height)
    colour_acc = torch.zeros(height, width, 3, dtype=f64)
    trans = torch.ones(height, width, dtype=f64)
    done = torch.zeros(height, width, dtype=torch.bool)
    cam_pts = means @ view[:3, :3].T + view[:3, 3]
    for i in torch.argsort(cam_pts[:, 2]).tolist():
        x, y, z = cam_pts[i].tolist()
        if z <= near:
            continue
        w, qx, qy, qz = (quats[i] / quats[i].norm()).tolist()
        rot = torch.tensor(
            [
                [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - w * qz), 2 * (qx * qz + w * qy)],
                [2 * (qx * qy + w * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - w * qx)],
                [2 * (qx * qz - w * qy), 2 * (qy * qz + w * qx), 1 - 2 * (qx * qx + qy * qy)],
            ],
            dtype=f64,
        )
        cov_world = rot @ torch.diag(scales[i] ** 2) @ rot.T
        lim_x, lim_y = 1.3 * 0.5 * width / fx, 1.3 * 0.5 * height / fy  # cx = w/2, cy = h/2 in these tests
        tx, ty = z * min(max(x / z, -lim_x), lim_x), z * min(max(y / z, -lim_y), lim_y)
        jac = torch.tensor([[fx / z, 0, -fx * tx / z**2], [0, fy / z, -fy * ty / z**2]], dtype=f64)
        cov2d = jac @ view[:3, :3] @ cov_world @ view[:3, :3].T @ jac.T + 0.3 * torch.eye(2, dtype=f64)
        u, v = fx * x / z + cx, fy * y / z + cy
        d = torch.stack([xs - u, ys - v], -1)
        sigma = 0.5 * torch.einsum("hwi,ij,hwj->hw", d, torch.linalg.inv(cov2d), d)
        alpha = torch.clamp_max(opacities[i] * torch.exp(-sigma), 0.99)
        use = ~done & (alpha >= 1 / 255) & (sigma >= 0)
        test_t = trans * (1 - alpha)
        stop = use & (test_t < 1e-4)
        done |= stop
        use &= ~stop
        colour_acc += torch.where(use, alpha * trans, 0.0)[..., None] * colours[i]
        trans = torch.where(use, test_t, trans)
    return colour_acc + trans[..., None] * background.to(f64), 1 - trans, done


EYE, TARGET, UP = [0.8, -1.0, -4.0], [0.1, 0.2, 0.0], [0.2, -1.0, 0.1]  # the camera of the random scene


@pytest.fixture(scope="module")
def random_scene() -> tuple[torch.Tensor, ...]:
    """200 seeded Gaussians in front of a camera at distance ~4, some partly off-screen, some behind it."""
    gen = torch.Generator().manual_seed(7)
    n = 200
    means = torch.empty(n, 3).uniform_(-1.6, 1.6, generator=gen)
    means[:6, 2] = torch.tensor([-5.5, -5.0, -4.2, -4.0, -3.995, 4.5])  # behind, at and near the camera plane
    quats = torch.randn(n, 4, generator=gen)
    scales = torch.exp(torch.empty(n, 3).uniform_(math.log(0.01), math.log(0.35), generator=gen))
    opacities = torch.empty(n).uniform_(0.0, 1.0, generator=gen)
    opacities[6:12] = torch.tensor([1.0, 0.995, 0.999, 1 / 255 - 1e-4, 0.002, 0.98])
    # a stack of opaque Gaussians on the line of sight through the image centre: T falls below 1e-4 there
    eye, target = torch.tensor(EYE), torch.tensor(TARGET)
    steps = torch.linspace(-0.3, 0.3, 6)[:, None]
    means[12:18] = target + steps * (target - eye)
    scales[12:18] = torch.tensor([0.3, 0.2, 0.25])
    opacities[12:18] = torch.tensor([0.97, 1.0, 0.9, 0.999, 0.95, 1.0])
    # two large Gaussians beside the view frustum (x/z ~ ±1.1, distinct depths), beyond the clamp of J at
    # 1.3 x half-FOV (0.72)
    view = look_at(np.array(EYE), np.array(TARGET), np.array(UP))
    cam_pts = torch.tensor([[3.3, 0.0, 3.0, 1.0], [-3.7, 0.5, 3.4, 1.0]], dtype=torch.float64)
    means[18:20] = (cam_pts @ torch.tensor(np.linalg.inv(view)).T)[:, :3].float()
    scales[18:20] = 1.0
    opacities[18:20] = 0.9
    colours = torch.rand(n, 3, generator=gen)
    return means, quats, scales, opacities, colours


def skewed_camera(width: int, height: int) -> Camera:
    view = look_at(np.array(EYE), np.array(TARGET), np.array(UP))
    focal = 0.9 * width
    k = np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    return Camera(view, k, width, height)


def test_tiled_renderer_equals_dense_reference(random_scene: tuple[torch.Tensor, ...]) -> None:
    cam = skewed_camera(52, 38)  # not multiples of the tile size: partial edge tiles
    background = torch.tensor([0.1, 0.6, 0.3])
    ref_image, ref_alpha, stopped = reference_render(*random_scene, cam, background)
    assert 0.2 < float((ref_alpha > 0.5).double().mean()) < 0.95  # a busy, partly empty image
    assert 0 < int(stopped.sum()) < stopped.numel() // 2  # the early stop at T < 1e-4 matters in some pixels
    for tile_size in (4, 8, 16):
        image, alpha = render(*random_scene, cam, background=background, tile_size=tile_size, return_alpha=True)
        np.testing.assert_allclose(image.numpy(), ref_image.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(alpha.numpy(), ref_alpha.numpy(), atol=1e-4, rtol=0)
    # float64 all the way: equal to rounding, with tiny batches (many padded batches)
    image64 = render(*(t.double() for t in random_scene), cam, background=background, max_batch_elems=1)
    assert image64.dtype == torch.float64
    np.testing.assert_allclose(image64.numpy(), ref_image.numpy(), atol=1e-9, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# 4. gradients


def test_gradients_match_finite_differences() -> None:
    gen = torch.Generator().manual_seed(3)
    n = 6
    f64 = torch.float64
    means = torch.empty(n, 3, dtype=f64).uniform_(-0.5, 0.5, generator=gen)
    means[:, 2] += 3.0
    quats = torch.randn(n, 4, dtype=f64, generator=gen)
    scales = torch.empty(n, 3, dtype=f64).uniform_(0.08, 0.3, generator=gen)
    opacities = torch.empty(n, dtype=f64).uniform_(0.3, 0.9, generator=gen)
    colours = torch.rand(n, 3, dtype=f64, generator=gen)
    cam = head_on_camera(20, 16, 18.0, 10.0, 8.0)
    background = torch.tensor([0.3, 0.2, 0.1], dtype=f64)

    def image_of(colours: torch.Tensor, opacities: torch.Tensor, means: torch.Tensor, scales: torch.Tensor):
        return render(means, quats, scales, opacities, colours, cam, background=background, return_alpha=True)

    inputs = tuple(t.clone().requires_grad_(True) for t in (colours, opacities, means, scales))
    assert torch.autograd.gradcheck(image_of, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_sh_gradients_and_grad_reaches_every_visible_gaussian(donut_params: dict[str, torch.Tensor]) -> None:
    gen = torch.Generator().manual_seed(5)
    n = 5
    f64 = torch.float64
    means = torch.empty(n, 3, dtype=f64).uniform_(-0.4, 0.4, generator=gen)
    means[:, 2] += 3.0
    quats = torch.randn(n, 4, dtype=f64, generator=gen)
    scales = torch.empty(n, 3, dtype=f64).uniform_(0.1, 0.3, generator=gen)
    opacities = torch.empty(n, dtype=f64).uniform_(0.3, 0.9, generator=gen)
    sh = 0.3 * torch.randn(n, 16, 3, dtype=f64, generator=gen)  # degree 3, colours stay above the 0 clamp
    cam = Camera(look_at(np.array([0.5, 0.3, -0.5]), np.array([0.0, 0.0, 3.0]), np.array([0.0, -1.0, 0.0])),
                 [[16.0, 0, 8.0], [0, 16.0, 8.0], [0, 0, 1]], 16, 16)  # fmt: skip
    assert torch.autograd.gradcheck(
        lambda sh: render(means, quats, scales, opacities, sh, cam, sh_degree=3), (sh.requires_grad_(True),)
    )
    # on the real scene: a scalar loss reaches the colours and opacities of the Gaussians in view
    params = {k: v.clone().requires_grad_(k in ("sh_dc", "opacities")) for k, v in donut_params.items()}
    cam = orbit_cameras(params["means"], 1, 48, 48)[0]
    render_scene(params, cam).square().mean().backward()
    touched = params["sh_dc"].grad.abs().sum(1) > 0
    assert 0.2 < float(touched.double().mean()) < 1.0  # the far side is hidden, the rest gets a gradient
    assert torch.isfinite(params["opacities"].grad).all() and (params["opacities"].grad != 0).any()


# ---------------------------------------------------------------------------------------------------------------------
# colours


def test_sh_conventions() -> None:
    sh_dc = torch.tensor([[0.0, 1.0, -3.0]])
    np.testing.assert_allclose(sh0_to_rgb(sh_dc).numpy(), [[0.5, 0.5 + SH_C0, 0.0]], atol=1e-7)
    # degree 0 through the renderer's SH path == plain colours sh0_to_rgb(sh_dc)
    dirs = torch.randn(4, 3)
    sh = torch.randn(4, 16, 3)
    np.testing.assert_allclose(eval_sh(sh, dirs, 0).numpy(), sh0_to_rgb(sh[:, 0]).numpy(), atol=1e-6)
    # the basis (3DGS constants, degree 3) is orthonormal on the sphere: Fibonacci-lattice quadrature
    m = 20000
    k = torch.arange(m, dtype=torch.float64) + 0.5
    z = 1 - 2 * k / m
    phi = math.pi * (3 - math.sqrt(5)) * k
    r = torch.sqrt(1 - z * z)
    basis = _sh_basis(torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1), 3)  # [m, 16]
    gram = 4 * math.pi / m * basis.T @ basis
    np.testing.assert_allclose(gram.numpy(), np.eye(16), atol=2e-3)
    # degree 1 as INRIA writes it: C0 sh0 - C1 y sh1 + C1 z sh2 - C1 x sh3 (+ 0.5)
    d = torch.tensor([[0.6, 0.0, 0.8]])
    coeffs = torch.zeros(1, 4, 3)
    coeffs[0, 3] = 1.0
    np.testing.assert_allclose(eval_sh(coeffs, d * 5.0, 1).numpy(), [[0.5 - 0.4886025119029199 * 0.6] * 3], atol=1e-6)
    with pytest.raises(ValueError, match="degree"):
        eval_sh(sh, dirs, 4)


# ---------------------------------------------------------------------------------------------------------------------
# 5. the real scene: orbit cameras, metrics, fine-tuning


def test_orbit_views_of_donut_and_metrics(donut: GaussianScene, donut_params: dict[str, torch.Tensor]) -> None:
    cams = orbit_cameras(donut.means, n_views=8, width=64, height=64)
    assert len(cams) == 8
    gen = torch.Generator().manual_seed(0)
    n = len(donut)
    keep90 = torch.randperm(n, generator=gen)[: int(0.9 * n)]
    keep50 = torch.randperm(n, generator=gen)[: n // 2]
    sub90 = {k: v[keep90] for k, v in donut_params.items()}
    sub50 = {k: v[keep50] for k, v in donut_params.items()}
    for cam in cams:
        with torch.no_grad():
            image, alpha = render_scene(donut_params, cam, return_alpha=True)
            image90 = render_scene(sub90, cam)
            image50 = render_scene(sub50, cam)
        coverage = float((alpha > 0.5).float().mean())
        assert 0.05 < coverage < 0.95, coverage
        assert float(image.min()) >= 0.0 and float(alpha.max()) <= 1.0
        assert torch.isinf(psnr(image, image))
        assert float(ssim(image, image)) == pytest.approx(1.0, abs=1e-6)
        p90, p50 = float(psnr(image90, image)), float(psnr(image50, image))
        assert math.isfinite(p90) and 12.0 < p90 < 50.0
        assert p50 < p90  # dropping more Gaussians hurts more
        s90, s50 = float(ssim(image90, image)), float(ssim(image50, image))
        assert 0.0 < s50 < s90 < 1.0


def test_fine_tuning_colours_and_opacities_reduces_the_render_loss(
    donut: GaussianScene, donut_params: dict[str, torch.Tensor]
) -> None:
    """The GHAP use: fit the colours and opacities of a reduced scene to renders of the original."""
    cams = orbit_cameras(donut.means, n_views=2, width=40, height=40, seed=3)
    with torch.no_grad():
        targets = [render_scene(donut_params, cam) for cam in cams]
    keep = torch.randperm(len(donut), generator=torch.Generator().manual_seed(1))[: len(donut) // 4]
    reduced = {k: v[keep].clone() for k, v in donut_params.items()}
    reduced["sh_dc"].requires_grad_(True)
    logit = torch.logit(reduced["opacities"].clamp(1e-4, 1 - 1e-4)).requires_grad_(True)
    optimiser = torch.optim.Adam([reduced["sh_dc"], logit], lr=0.05)
    losses = []
    for _ in range(8):
        optimiser.zero_grad()
        params = {**reduced, "opacities": torch.sigmoid(logit)}
        loss = sum(torch.nn.functional.l1_loss(render_scene(params, c), t) for c, t in zip(cams, targets, strict=True))
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


# ---------------------------------------------------------------------------------------------------------------------
# 6. camera conventions


@pytest.mark.parametrize(("width", "height"), [(64, 64), (96, 64)])
def test_orbit_cameras_look_at_the_centre(donut: GaussianScene, width: int, height: int) -> None:
    cams = orbit_cameras(donut.means, n_views=6, width=width, height=height, fov_deg=40.0, elevation_deg=(30, -10, 0))
    centre = np.median(donut.means.astype(np.float64), axis=0)
    distances = []
    for cam in cams:
        view, k = cam.viewmat.double().numpy(), cam.K.double().numpy()
        rot = view[:3, :3]
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-6)
        assert np.linalg.det(rot) == pytest.approx(1.0, abs=1e-6)
        p = rot @ centre + view[:3, 3]
        assert p[2] > 0  # in front of the camera
        uv = (k @ (p / p[2]))[:2]
        np.testing.assert_allclose(uv, [width / 2, height / 2], atol=1e-3)
        distances.append(np.linalg.norm(cam.center.double().numpy() - centre))
        assert cam.K[0, 0] == cam.K[1, 1] == pytest.approx(min(width, height) / (2 * math.tan(math.radians(20))))
    np.testing.assert_allclose(distances, distances[0], rtol=1e-5)
    # deterministic; another seed turns the orbit
    again = orbit_cameras(donut.means, n_views=6, width=width, height=height, fov_deg=40.0, elevation_deg=(30, -10, 0))
    assert all(torch.equal(a.viewmat, b.viewmat) for a, b in zip(cams, again, strict=True))
    other = orbit_cameras(donut.means, n_views=6, width=width, height=height, fov_deg=40.0, seed=1)
    assert not torch.allclose(other[0].viewmat, cams[0].viewmat)


def test_orbit_cameras_ignore_floaters(donut: GaussianScene) -> None:
    means = donut.means.copy()
    rng = np.random.default_rng(0)
    means[:40] = rng.normal(size=(40, 3)) * 50.0  # 0.5% far floaters
    base = orbit_cameras(donut.means, n_views=2)
    noisy = orbit_cameras(means, n_views=2)
    for a, b in zip(base, noisy, strict=True):
        ratio = np.linalg.norm(b.center.numpy() - np.median(means, 0)) / np.linalg.norm(
            a.center.numpy() - np.median(donut.means, 0)
        )
        assert 0.9 < ratio < 1.1


# ---------------------------------------------------------------------------------------------------------------------
# inputs


def test_scene_tensors_and_bad_inputs(donut: GaussianScene) -> None:
    params = _tensors(donut)
    assert set(params) == {"means", "quats", "scales", "opacities", "sh_dc", "sh_rest"}
    assert all(v.dtype == torch.float32 for v in params.values())
    assert params["sh_rest"].shape == (len(donut), 0, 3)
    np.testing.assert_allclose(params["quats"].norm(dim=1).numpy(), 1.0, atol=1e-6)
    cam = orbit_cameras(donut.means, 1, 16, 16)[0]
    m, q, s, o, c = (params[k] for k in ("means", "quats", "scales", "opacities", "sh_dc"))
    with pytest.raises(ValueError, match="empty"):
        render(m[:0], q[:0], s[:0], o[:0], c[:0], cam)
    with pytest.raises(ValueError, match="quats"):
        render(m, q[:, :3], s, o, c, cam)
    with pytest.raises(ValueError, match="opacities"):
        render(m, q, s, o[:-1], c, cam)
    with pytest.raises(ValueError, match="SH colors"):
        render(m, q, s, o, c, cam, sh_degree=1)
    with pytest.raises(ValueError, match="background"):
        render(m, q, s, o, c, cam, background=(0.0, 0.0))
    with pytest.raises(ValueError, match="backend"):
        render(m, q, s, o, c, cam, backend="cuda")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        orbit_cameras(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="viewmat"):
        Camera(torch.eye(3), torch.eye(3), 8, 8)
    with pytest.raises(ValueError, match="shape"):
        psnr(torch.zeros(4, 4, 3), torch.zeros(4, 5, 3))
    # nothing in view: the background, alpha 0
    behind = render(m - 100.0 * cam.viewmat[2, :3], q, s, o, c, cam, background=(0.1, 0.2, 0.3), return_alpha=True)
    np.testing.assert_allclose(behind[0].numpy(), np.broadcast_to([0.1, 0.2, 0.3], (16, 16, 3)), atol=1e-7)
    assert float(behind[1].abs().max()) == 0.0


def _gsplat_cuda() -> bool:
    try:
        import gsplat  # noqa: F401
    except (ImportError, OSError, RuntimeError):
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not _gsplat_cuda(), reason="gsplat and a CUDA device are needed for the gsplat backend")
def test_gsplat_backend_agrees_with_torch_backend(donut_params: dict[str, torch.Tensor]) -> None:
    params = {k: v.cuda() for k, v in donut_params.items()}
    for cam in orbit_cameras(params["means"], 3, 96, 96):
        a = render_scene(params, cam, backend="torch")
        b = render_scene(params, cam, backend="gsplat")
        # gsplat clamps alpha at 0.999 instead of 0.99: small differences on opaque pixels only
        assert float((a - b).abs().mean()) < 5e-3
        assert float(psnr(b, a)) > 35.0


# ---------------------------------------------------------------------------------------------------------------------
# hit counts (LightGaussian) and the frozen-geometry view of the fine-tuning


def test_hit_counts_are_the_composited_pixels() -> None:
    """Alone, a Gaussian hits exactly the pixels where its alpha reaches 1/255 (read off its render: white on black);
    behind two walls of alpha 0.99 (transmittance below 1e-4 after them) it hits nothing; a Gaussian below
    opacity 1/255 hits nothing, and an off-screen one nothing."""
    camera = head_on_camera(48, 40, 40.0, 24.0, 20.0)
    means = torch.tensor([[0.1, -0.05, 3.0], [0.0, 0.0, 2.0], [0.0, 0.0, 2.5], [0.0, 0.0, 4.0], [9.0, 0.0, 1.0]])
    scales = torch.tensor([[0.3, 0.2, 0.1], [20.0, 20.0, 0.1], [20.0, 20.0, 0.1], [0.3, 0.3, 0.1], [0.1, 0.1, 0.1]])
    quats = torch.tensor([quat_z(0.4), quat_z(0.0), quat_z(0.0), quat_z(0.0), quat_z(0.0)])
    opacities = torch.tensor([0.7, 1.0, 1.0, 0.003, 0.9])
    target = slice(0, 1)
    alone = hit_counts(means[target], quats[target], scales[target], opacities[target], [camera])
    image = render(means[target], quats[target], scales[target], opacities[target], torch.ones(1, 1), camera)
    assert int(alone[0]) == int((image[..., 0] >= 1.0 / 255.0 - 1e-6).sum()) > 100
    hits = hit_counts(means, quats, scales, opacities, [camera, camera])
    assert hits.dtype == torch.int64 and hits.shape == (5,)
    assert int(hits[0]) == 0 and int(hits[1]) == 2 * 48 * 40  # two walls of alpha 0.99 in front: T < 1e-4 behind
    assert int(hits[3]) == 0 and int(hits[4]) == 0
    no_walls = hit_counts(means[[0, 3, 4]], quats[[0, 3, 4]], scales[[0, 3, 4]], opacities[[0, 3, 4]], [camera])
    assert no_walls.tolist() == [int(alone[0]), 0, 0]
    with pytest.raises(ValueError, match="camera"):
        hit_counts(means, quats, scales, opacities, [])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_frozen_geometry_view_matches_render_and_autograd(donut: GaussianScene, dtype: torch.dtype) -> None:
    """FrozenGeometryView (cached projection and tiles, analytic backward) gives render()'s image and autograd's
    gradients w.r.t. SH coefficients (degree 3, random higher bands) and opacity logits, with a background."""
    params = {k: v.to(dtype) for k, v in _tensors(donut).items()}
    n = params["means"].shape[0]
    generator = torch.Generator().manual_seed(0)
    sh = torch.cat([params["sh_dc"][:, None], 0.2 * torch.randn(n, 15, 3, generator=generator, dtype=dtype)], 1)
    logits = torch.logit(params["opacities"].clamp(1e-6, 1 - 1e-6))
    background = torch.tensor([0.2, 0.3, 0.1])
    for camera in orbit_cameras(donut.means, n_views=2, width=44, height=36, seed=1, weights=donut.opacities):
        target = torch.rand(36, 44, 3, generator=generator, dtype=dtype)
        grads, images = [], []
        for frozen in (False, True):
            s, lo = sh.clone().requires_grad_(True), logits.clone().requires_grad_(True)
            if frozen:
                view = FrozenGeometryView(params["means"], params["quats"], params["scales"], camera, 3)
                image = view.render(torch.sigmoid(lo), s, background)
            else:
                image = render(params["means"], params["quats"], params["scales"], torch.sigmoid(lo), s, camera,
                               sh_degree=3, background=background)
            loss = (image - target).abs().mean() + 0.2 * (1.0 - ssim(image.clamp(0, 1), target))
            grads.append(torch.autograd.grad(loss, [s, lo]))
            images.append(image.detach())
        tol = 1e-5 if dtype == torch.float32 else 1e-7
        torch.testing.assert_close(images[1], images[0], atol=tol, rtol=0)
        for got, want in zip(grads[1], grads[0], strict=True):
            assert want.abs().max() > 0
            torch.testing.assert_close(got, want, atol=50 * tol * float(want.abs().max()), rtol=0)
    with pytest.raises(ValueError, match="sh"):
        view.render(torch.sigmoid(logits), sh[:, :4])
