"""eegsine.bench"""
