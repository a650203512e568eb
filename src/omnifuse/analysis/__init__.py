"""How a dataset's modalities interact: partial information decomposition of a label."""
