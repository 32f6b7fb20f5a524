"""Running the build graph's jobs elsewhere than this machine: on a Ray cluster (``--executor
ray``). Ray is imported only by the modules that need it (``import converters`` pulls none)."""
