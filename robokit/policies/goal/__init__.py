"""Goal-conditioned policies (GRP, VIMA-style) with their instruction tokenizer and action coders."""
