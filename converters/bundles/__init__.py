"""Air-gapped deployment bundles: building, archiving, signing, verifying, and the device-side run.py."""
