"""Third-party code kept verbatim (see README.md in this folder)."""
