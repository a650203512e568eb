"""Fusion search: Optuna trials over the fusion strategy, its size and the optimiser."""
