"""Inference: serving the champion, hot-swapped on promotion."""
