"""eegsine.kernels"""
if __name__ != "eegsine.kernels":  # the checkout's folder found as top-level `kernels` (the root on sys.path)
    from eegsine import hand_off

    hand_off(__name__)
