"""Monitoring: the label join, prequential performance and drift detection."""
