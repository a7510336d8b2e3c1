"""Camera configuration (adapters.camera.config) and the package's registered kind."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import yaml
from pydantic import ValidationError

import adapters.camera
from adapters.camera.config import CameraConfig
from adapters.camera.simulator import ChuteSimulatorConfig
from adapters.camera.source import classify_source

from .common import REPO


def test_profile_validates_once_the_deployment_names_the_camera() -> None:
    profile = yaml.safe_load((REPO / "configs" / "devices" / "chute_camera.yaml").read_text())
    assert "source" not in profile and "chute" not in profile  # simulator settings are not production config
    with pytest.raises(ValidationError, match="source"):
        CameraConfig.model_validate({**profile, "id": "chute1"})
    real = CameraConfig.model_validate({**profile, "id": "chute1", "source": "rtsp://u:p@10.0.4.31:554/ch1"})
    assert classify_source(real.source) == "url"
    assert real.buffer_frames == 2 and real.reconnect
    alone = CameraConfig.model_validate({**CameraConfig.PROFILE_DEFAULTS, **profile, "id": "chute1"})  # `simulate`
    assert alone.source == 0


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValidationError):
        CameraConfig.model_validate({"kind": "camera", "id": "c", "source": 0, "exposure": 3})
    with pytest.raises(ValidationError):
        CameraConfig.model_validate({"kind": "camera", "id": "c", "source": 0, "buffer_frames": 0})
    with pytest.raises(ValidationError):
        ChuteSimulatorConfig(off_type_share=1.5)
    with pytest.raises(ValidationError, match="chute"):  # the simulator's settings left the production schema
        CameraConfig.model_validate({"kind": "camera", "id": "c", "source": 0, "chute": {}})


def test_every_field_is_described() -> None:
    for model in (CameraConfig, ChuteSimulatorConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


def test_kind_points_at_real_components() -> None:
    (kind,) = adapters.camera.KINDS
    assert (kind.name, kind.role, kind.config, kind.report) == ("camera", "device", CameraConfig, None)
    for ref in (kind.component, kind.simulator):
        assert ref is not None
        module, _, name = ref.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), ref


def test_validating_a_camera_does_not_import_opencv() -> None:
    """`edge-runtime validate` loads every kind's config; OpenCV must wait until a camera opens."""
    code = (
        "import sys, adapters.camera;"
        "from adapters.camera.config import CameraConfig;"
        "CameraConfig.model_validate({'kind': 'camera', 'id': 'c', 'source': 0});"
        "assert 'cv2' not in sys.modules, 'cv2 imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=REPO)
