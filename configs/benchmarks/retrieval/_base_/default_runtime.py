# Runtime of the retrieval benchmarks (mmpretrain's defaults, CPU-friendly). The scope is set
# explicitly: after an mmseg/mmdet run in the same process, mmengine's default scope may still be
# theirs. benchmarks.models.knn registers the Holidays metric.
default_scope = 'mmpretrain'
custom_imports = dict(imports=['benchmarks.models.registry', 'benchmarks.models.knn'],
                      allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
