# Runtime shared by the change detection benchmarks (mmseg's defaults, made CPU-friendly).
# benchmarks.models.change_detection registers the siamese segmentor, BIT head, fusion neck,
# the image-pair loader, the mask binarisation and the change metric in mmseg's registries.
default_scope = 'mmseg'
custom_imports = dict(
    imports=['benchmarks.models.registry', 'benchmarks.models.change_detection'],
    allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
# No fixed name: the Runner names each run's visualizer, so runs in one process keep their own logs.
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
