"""The config models of tasks/configs.py: the command line's copies of the core's names equal the core's, option
values are refused as before, and the models import nothing heavy."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

import pytest
from pydantic import ValidationError

from tasks import configs

HEAVY = ("torch", "prefect", "zarr", "pandas", "trimesh", "imagecodecs", "dask", "distributed")


def test_copies_of_core_names_equal_the_core():
    from otcore.points.autodecoder_training import BASELINE_PATCHES, VARIANTS
    from otcore.splats.reduction import REDUCTION_METHODS
    from storage.image_codecs import CodecName

    assert get_args(configs.CodecName) == get_args(CodecName)
    assert configs.VARIANTS == tuple(VARIANTS)
    assert configs.BASELINE_PATCHES == BASELINE_PATCHES
    assert configs.REDUCTION_METHODS == tuple(REDUCTION_METHODS)
    assert set(configs.DEFAULT_REDUCTION_METHODS) <= set(REDUCTION_METHODS)


@pytest.mark.parametrize("fields", [
    {"codec": "png", "codec_quality": 50.0},  # png is lossless only
    {"codec": "jpeg2k", "codec_quality": 500.0},  # PSNR target out of range
    {"rate_distortion": ["jpeg2k:sixty"]},
    {"rate_distortion": ["webp"]},
])
def test_geometry_image_config_refuses_bad_codec_settings(fields):
    with pytest.raises(ValidationError):
        configs.GeometryImageConfig(**fields)


def test_geometry_image_config_codec_settings():
    config = configs.GeometryImageConfig(rate_distortion=["jpeg2k:60", "jpeg2k", "jpegxl:lossless"])
    assert [s.label for s in config.rate_distortion_settings] == ["jpeg2k:lossless", "jpeg2k:60", "jpegxl:lossless"]
    assert config.codec_setting.bits == 14


def test_autodecoder_training_config_per_variant():
    config = configs.AutodecoderConfig(patches=16)
    assert config.training("neuralqaad").n_patches == 16
    assert config.training("atlasnetv2").n_patches == configs.BASELINE_PATCHES
    with pytest.raises(ValueError, match="unknown variant"):
        config.training("nope")


def test_configs_and_commands_import_nothing_heavy():
    """``brenier CMD --help`` builds its options from these modules: none of them may pull torch or Prefect."""
    code = ("import sys, flows.runtime.commands, tasks.configs; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""


def test_usage_error_imports_nothing_heavy(tmp_path):
    """A bad path is refused before Prefect, torch or Zarr is imported (issue 21: an answer in under 1 s)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "flows.runtime.cli", "geometry-images",
                           str(tmp_path / "missing"), "--store", str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time")}
    assert not imported & set(HEAVY)
    printed = done.stdout + "".join(line for line in done.stderr.splitlines() if not line.startswith("import time"))
    assert "missing" in printed
