"""Retraining: continuous online training and model versioning."""
