"""Spleeter-exact source separation models in TensorFlow 2 / Keras 3 (no Beam here)."""
