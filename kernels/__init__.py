"""eegsine.kernels"""
