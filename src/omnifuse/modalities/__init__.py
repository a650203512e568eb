"""Modality kinds: loading, preprocessing and from-scratch encoders."""

from omnifuse.config import (
    AudioConfig,
    ImageConfig,
    TabularConfig,
    TextConfig,
    TimeSeriesConfig,
    VectorConfig,
    VideoConfig,
)
from omnifuse.modalities.audio import AudioModality
from omnifuse.modalities.base import Encoder, Modality, Tokens
from omnifuse.modalities.image import ImageModality
from omnifuse.modalities.tabular import TabularModality
from omnifuse.modalities.text import TextModality
from omnifuse.modalities.timeseries import TimeSeriesModality
from omnifuse.modalities.vector import VectorModality
from omnifuse.modalities.video import VideoModality

KINDS: dict[type, type[Modality]] = {
    ImageConfig: ImageModality,
    TextConfig: TextModality,
    AudioConfig: AudioModality,
    TabularConfig: TabularModality,
    TimeSeriesConfig: TimeSeriesModality,
    VideoConfig: VideoModality,
    VectorConfig: VectorModality,
}

AnyModalityConfig = (
    ImageConfig
    | TextConfig
    | AudioConfig
    | TabularConfig
    | TimeSeriesConfig
    | VideoConfig
    | VectorConfig
)


def create_modality(name: str, config: AnyModalityConfig) -> Modality:
    """The modality object for a validated config."""
    return KINDS[type(config)](name, config)


__all__ = ["Encoder", "Modality", "Tokens", "create_modality"]
