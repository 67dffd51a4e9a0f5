"""``eegsine pipeline``: the stages of the main job, resumable, each one command."""
