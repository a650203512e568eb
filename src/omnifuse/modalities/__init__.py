"""Modality kinds, one module each: its config, loading, fitted statistics, encoders and
robustness perturbations, registered with `register_kind` and `register_encoder`."""

from omnifuse.modalities import audio, image, tabular, text, timeseries, vector, video
from omnifuse.modalities.base import Modality

__all__ = ["Modality", "audio", "image", "tabular", "text", "timeseries", "vector", "video"]
