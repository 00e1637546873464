# Off-the-shelf features: nothing is trained. benchmarks/run.py always calls Runner.train() and
# then validates, so the train loop has zero epochs (the optimizer the Runner builds is never
# stepped) and the runner's validation is the evaluation. An epoch-based loop, so that run.py
# refuses --iters in one line instead of training a retriever that has no loss. No checkpoints:
# there is nothing new to keep. The retriever encodes its database before each validation.
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.0))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=0)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=None,
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False))
custom_hooks = [dict(type='PrepareProtoBeforeValLoopHook')]
