"""Visualisation: attention heat-map trees (attention.py), episode plots and videos (episode.py)."""
