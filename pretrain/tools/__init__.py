"""Data tools for pretraining: tile large scenes, convert them per modality, write MindRecord shards.

``python -m pretrain.tools.make_dataset --help``. Heavy imports (MindSpore, tifffile, PIL, tqdm)
happen inside the functions that need them, so the CLI's help stays instant.
"""
