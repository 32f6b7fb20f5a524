"""Default bounds that the settings table, the configuration and the code reading inputs share.

Plain numbers in a module that imports nothing, so the settings table (and with it
``invoke --list``) does not import numpy to know them. ``inputs/array_files.py`` is shipped
alone in bundles and keeps its own copy of ``MAX_ARRAY_MB``; a test keeps the two equal.
"""

MAX_ARRAY_MB = 2048  # a dataset of 3,000 float32 224x224x3 images is 1.7 GiB
# The bound on regression outputs' relative error (||artifact - Keras|| / ||Keras||) when the
# model also has class outputs, which --max-accuracy-drop bounds
MAX_RELATIVE_ERROR = 0.05
