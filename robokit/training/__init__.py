"""Offline training: episode datasets (sampling, normalisation statistics, caching), the trainer
loop, its runtime (device, DDP, AMP) and its logs. Policies are built through the registry and
trained through their ``compute_loss``; what data a policy needs comes from its config."""
