"""Stage keys, stamps and manifests; whether a build folder's artifacts still belong together."""
