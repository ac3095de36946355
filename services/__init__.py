"""driftloop's five services and its command line."""
