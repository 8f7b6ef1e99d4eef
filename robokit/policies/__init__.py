"""Policies (ACT, CNN-MLP, GRP, VIMA-style), datasets, training and checkpoints."""
