# k-NN classification of a frozen RingMoE backbone on NWPU-RESISC45 (DINO's protocol): each image
# is one L2-normalised feature (the globally pooled, normed last stage); a test image's 20 most
# cosine-similar training features vote for their labels with weights exp(cos / 0.07).
# One training epoch fills the feature bank (benchmarks/models/knn.py: no loss, no gradient, no
# optimizer step; backbone and neck stay in eval mode), the validation at its end votes over it.
# Train ratio 10% (default) or 20%: --cfg-options train_ratio=0.2.
_base_ = ['./_base_/nwpu_resisc45.py', './_base_/ringmoe_cls.py', './_base_/default_runtime.py']
custom_imports = dict(imports=['benchmarks.models.registry', 'benchmarks.models.knn'],
                      allow_failed_imports=False)
model = dict(
    type='KNNClassifier',
    backbone=dict(drop_path_rate=0.0),
    head=dict(
        _delete_=True,
        type='KNNHead',
        num_classes=45,
        in_channels=256,  # run.py sets it from the backbone's last stage width
        k=20,
        temperature=0.07))

# The bank holds features of the test transform, as in DINO: no augmentation, each training
# image exactly once, in dataset order.
train_pipeline = {{_base_.test_pipeline}}
train_dataloader = dict(
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(pipeline=train_pipeline))

# One pass over the training split, then one validation. The Runner builds this optimizer, and
# KNNClassifier.train_step never steps it. No checkpoints: the bank is rebuilt by training, never
# restored (a --resume run starts over and fills it again).
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.0))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=None,
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False))

protocol = 'knn'  # the results' protocol column
