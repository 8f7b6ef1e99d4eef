"""ACT: the CVAE transformer that predicts action chunks, the original code's module layout
(for importing its checkpoints) and the importer."""
