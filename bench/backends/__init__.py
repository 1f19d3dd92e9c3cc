"""Inference backends, registered in BACKENDS."""
