"""Low-temperature compensation: pure numpy/OpenCV math and the tools that fit it (no asyncio, no I/O).

One layer per module, each a small class or a few functions, arrays in and arrays out (see `docs/cold.md`):

- `calibration.files`: the calibration file models (`kind: optics | sensor | baseline`) and their YAML form;
- `calibration.lens_fog`: `LensFogCompensation`, blind veil (transmission, airlight) estimate and inversion;
- `calibration.illumination`: `IlluminationDrift`, LED channel-gain correction;
- `calibration.sensor_drift`: `SensitivityDrift`, accelerometer sensitivity and offset versus temperature;
- `calibration.severity`: velocity RMS (mm/s, 10 Hz-1 kHz) and its zone A/B/C/D;
- `calibration.cold_start`: `ColdStartBaseline`, the anomaly bar by temperature and time since start;
- `calibration.weld_thermal`: EN 1011-2 heat input and t8/5, pyrometer cooling-curve t8/5;
- `calibration.fit`: the fits behind `edge-runtime calibrate optics | sensor | baseline`.

Nothing is imported here, so `import calibration` stays cheap; the package never imports `edge_runtime` or `adapters`.
"""
