"""Tensor Edge Converter: Keras models to validated TFLite artifacts.

Importing this package needs only the standard library and numpy; TensorFlow and LiteRT are
imported inside the stages that use them.
"""

__version__ = "0.1.0"
