"""Features: online feature computation and the point-in-time label join."""
