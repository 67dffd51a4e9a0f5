"""Adversarial attacks: the torch-free registry (names, parameters, presets) and the algorithms."""
