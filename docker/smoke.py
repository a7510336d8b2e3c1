"""Build-time smoke test of an image: the native wheels import and every shipped model loads and runs once.

`load_model` checks each file's sha256 and tensor signature and runs a warm-up inference, so a wheel built for the
wrong CPU, a missing execution provider or a truncated model fails the build, not the first shift.
"""

from __future__ import annotations

import platform

import cv2
import numpy as np
import onnxruntime

from edge_runtime.inference import load_model, read_manifest
from edge_runtime.paths import models_dir


def main() -> None:
    print(f"{platform.machine()} python {platform.python_version()} numpy {np.__version__}")
    print(f"opencv {cv2.__version__} onnxruntime {onnxruntime.__version__} {onnxruntime.get_available_providers()}")
    cv2.imencode(".jpg", np.zeros((8, 8, 3), dtype=np.uint8))
    n = 0
    for manifest_path in sorted(models_dir().glob("*/model.yaml")):
        manifest = read_manifest(manifest_path.parent)
        for variant in ("fp32", *manifest.variants):
            print(f"loaded {load_model(manifest_path.parent, variant=variant).ident} ({variant})")
            n += 1
    if n == 0:
        raise SystemExit(f"no models under {models_dir()}")


if __name__ == "__main__":
    main()
