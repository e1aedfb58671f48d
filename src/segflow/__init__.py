"""segflow: polygon annotations -> masks -> a trained, tracked, registered U-Net."""

from __future__ import annotations

import os

# Nothing phones home: MLflow and albumentations telemetry/update checks are off unless
# the user explicitly turned them on. (DVC's analytics is off in .dvc/config.)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

__version__ = "0.1.0"
