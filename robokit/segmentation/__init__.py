"""Segmentation models of robot images: training data, models, training and evaluation (`robokit seg`)."""
