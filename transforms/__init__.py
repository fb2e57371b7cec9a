"""Reusable Beam PTransforms and DoFns of the separation pipeline."""
