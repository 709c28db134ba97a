"""Inference: automatic segmentation at original image size, and overlay pictures."""
