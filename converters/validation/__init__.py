"""Comparing an artifact with the Keras model: runtimes, metrics, latency."""
