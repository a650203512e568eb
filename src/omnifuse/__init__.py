"""omnifuse: general-purpose multimodal learning."""

__version__ = "0.1.0"
