"""The model shipped with digitscan (``digits.onnx`` and its card), as package data."""
