"""Scores: EEG embedding evaluation and the standard EEG baselines, image quality metrics (FID, IS, LPIPS, per
class) and their feature networks."""
