"""Launching distributed pretraining (pretrain/train.py with a ``parallel`` config section).

- ``python -m pretrain.launch.rank_table``: write or check an HCCL rank table (Ascend, version 1.0)
- ``python -m pretrain.launch.hccl_run``: start one process per device of this node from a rank table
- ``python -m pretrain.launch.msrun``: MindSpore's dynamic-cluster launcher (CPU, GPU, Ascend)

Each CLI answers --help at once (nothing heavy is imported), prints one-line errors and exits 2
on bad input, and shows what it would run with --dry-run.
"""
