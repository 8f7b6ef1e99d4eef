"""CNN-MLP: the original ACT repository's baseline (per-camera CNN features and qpos through an MLP)."""
