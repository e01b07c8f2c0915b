"""Hydra plugin package of cnn-experiments: Hydra accepts sweeper classes only from ``hydra_plugins``."""
