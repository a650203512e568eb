"""Pretrained backbones, loaded offline, registered as encoders of their modality kind.

Importing this package registers the builders only: transformers and the weight wheels are
imported when a builder runs, so the core installs and works without the 'pretrained' extra.
"""

from omnifuse.pretrained import audio, efficientnet, text, vision
from omnifuse.pretrained.encoder import PretrainedEncoder

__all__ = ["PretrainedEncoder", "audio", "efficientnet", "text", "vision"]
