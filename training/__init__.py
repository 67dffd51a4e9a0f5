"""eegsine.training"""
