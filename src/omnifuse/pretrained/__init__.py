"""Pretrained backbones, loaded offline, registered as encoders of their modality kind."""
