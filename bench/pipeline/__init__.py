"""``eegsine pipeline``: the stages of the main job, resumable; each builds typed configs and calls the library."""
