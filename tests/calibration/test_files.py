from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from calibration.cold_start import fit_baseline
from calibration.files import (
    BaselineCalibration,
    OpticsCalibration,
    SensorCalibration,
    dump_calibration,
    load_calibration,
    parse_calibration,
)
from calibration.fit import sensor_from_datasheet


def test_round_trip_every_kind(tmp_path: Path, grain_calibration: OpticsCalibration) -> None:
    sensor = sensor_from_datasheet("line1.*", 20.0, 0.12, -0.5)
    baseline = fit_baseline([0.1] * 50, [20.0] * 50, [60.0] * 50, data="healthy")
    for cal, cls in (
        (grain_calibration, OpticsCalibration),
        (sensor, SensorCalibration),
        (baseline, BaselineCalibration),
    ):
        path = tmp_path / f"{cls.__name__}.yaml"
        dump_calibration(cal, path)
        back = load_calibration(path)
        assert isinstance(back, cls)
        assert back == cal


def test_strict_models_refuse_bad_files() -> None:
    good = sensor_from_datasheet("*", 20.0, 0.1, 0.0).model_dump(mode="json")
    with pytest.raises(ValidationError, match="kind"):
        parse_calibration({**good, "kind": "lens"})
    with pytest.raises(ValidationError, match="extra"):
        parse_calibration({**good, "colour": "red"})
    bad_range = {**good, "provenance": {**good["provenance"], "valid_c": [10, -10]}}
    with pytest.raises(ValidationError, match="lo < hi"):
        parse_calibration(bad_range)
    with pytest.raises(ValidationError, match="sensors"):
        parse_calibration({**good, "sensors": []})


def test_datasheet_yaml_is_typeable() -> None:
    text = """
kind: sensor
provenance: {created: '2026-11-27', data: 'PCB 603C01 datasheet', valid_c: [-40, 60]}
sensors:
  - {stream: 'line1.*.vib_*', reference_c: 24, sensitivity_tc_pct_per_k: 0.09, offset_mg_per_k: 0.3}
"""
    cal = parse_calibration(yaml.safe_load(text))
    assert isinstance(cal, SensorCalibration)
    assert cal.sensors[0].reference_c == 24


def test_every_field_is_described() -> None:
    for cls in (OpticsCalibration, SensorCalibration, BaselineCalibration):
        schema = cls.model_json_schema()
        for name, prop in schema["properties"].items():
            assert prop.get("description"), f"{cls.__name__}.{name} has no description"
