"""Reaching a target device over SSH, probing what it offers, and running artifacts there."""
