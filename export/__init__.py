"""eegsine.export"""
if __name__ != "eegsine.export":  # the checkout's folder found as top-level `export` (the root on sys.path)
    from eegsine import hand_off

    hand_off(__name__)
