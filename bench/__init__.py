"""eegsine.bench"""
if __name__ != "eegsine.bench":  # the checkout's folder found as top-level `bench` (the root on sys.path)
    from eegsine import hand_off

    hand_off(__name__)
