"""What Invoke tasks call: the settings table, shared task behaviour, infer, verify and clean."""
