"""Converts a trainer checkpoint to ONNX, proves parity with torch, and writes the model card.

``onnx_export`` produces the file, ``validate`` proves it computes the checkpoint's function,
``card`` describes it, ``quantize`` derives the int8 variant; ``pipeline`` runs them in order.
"""
