"""Kachin rare-earth mining watch: Sentinel-2 change detection of in-situ leaching sites."""

__version__ = "0.1.0"
