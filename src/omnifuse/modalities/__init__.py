"""Modality kinds: loading, preprocessing and from-scratch encoders."""

from omnifuse.config import AudioConfig, ImageConfig, TabularConfig, TextConfig
from omnifuse.modalities.audio import AudioModality
from omnifuse.modalities.base import Encoder, Modality, Tokens
from omnifuse.modalities.image import ImageModality
from omnifuse.modalities.tabular import TabularModality
from omnifuse.modalities.text import TextModality

KINDS: dict[type, type[Modality]] = {
    ImageConfig: ImageModality,
    TextConfig: TextModality,
    AudioConfig: AudioModality,
    TabularConfig: TabularModality,
}


def create_modality(
    name: str, config: ImageConfig | TextConfig | AudioConfig | TabularConfig
) -> Modality:
    """The modality object for a validated config."""
    return KINDS[type(config)](name, config)


__all__ = ["Encoder", "Modality", "Tokens", "create_modality"]
