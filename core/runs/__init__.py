"""Run folders (lock, config, sweep of temporaries), checkpoints, training plots."""
