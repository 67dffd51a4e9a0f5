"""Robustness evaluation: attacks at an eps grid, worst case per example, paired statistics."""
