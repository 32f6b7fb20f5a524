"""A toy target for tests/test_targets.py: it copies the fp32 TFLite model. Nothing outside
this package knows it; registering ``target.TARGET`` is all it takes to plan, build, validate,
report and bundle it."""
