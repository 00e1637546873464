# Runtime shared by the rotated-detection benchmarks (mmrotate 1.0.0rc1's defaults, CPU-friendly).
# mmrotate imports only through benchmarks/compat.py's import hook (collections.Sequence alias,
# mmdet version assert); benchmarks.models.registry installs it and registers RingMoE in
# mmrotate's MODELS; benchmarks.datasets.rotated_loaders registers DOTATxtDataset.
default_scope = 'mmrotate'
custom_imports = dict(
    imports=['benchmarks.models.registry', 'mmrotate.datasets', 'mmrotate.evaluation',
             'mmrotate.models', 'mmrotate.structures', 'mmrotate.visualization',
             'benchmarks.datasets.rotated_loaders'],
    allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
# No fixed name: the Runner names it after the run, so runs in one process (tests) each write
# their own vis_data/scalars.json instead of reusing the first run's visualizer instance.
visualizer = dict(type='RotLocalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
