"""eegsine.export"""
