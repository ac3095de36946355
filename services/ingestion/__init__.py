"""Ingestion: validation, normalisation and de-duplication of raw events and labels."""
