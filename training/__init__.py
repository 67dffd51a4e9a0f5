"""eegsine.training"""
if __name__ != "eegsine.training":  # the checkout's folder found as top-level `training` (the root on sys.path)
    from eegsine import hand_off

    hand_off(__name__)
