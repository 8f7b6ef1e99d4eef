"""Policies: models only. One folder per family (``act/`` with the CNN-MLP baseline beside it in
``cnnmlp/``, ``goal/`` for GRP and VIMA), shared building blocks in ``nn/``, the :class:`Policy`
interface and its config in ``base.py``, the registry and the single-file checkpoint format.

Datasets and the training loop live in :mod:`robokit.training`; nothing here imports them.
"""
