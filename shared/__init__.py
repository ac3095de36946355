"""driftloop's common library: settings, serde, topics, metrics, logging, errors, broker."""
