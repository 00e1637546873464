# A short iteration-based schedule for CPU demos and tests: AdamW, linear warm-up then poly
# decay, one validation and one checkpoint at the end (checkpoints make --resume possible).
# BIT trains 200 epochs of LEVIR-CD's 256 px crops (batch 8); pass --iters for real data.
max_iters = 100
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01),
    # The neck and head start from random weights: 10x the backbone's rate (mmseg's usual
    # head lr_mult), so that they catch up with a pretrained backbone within a short schedule.
    paramwise_cfg=dict(custom_keys={
        'neck': dict(lr_mult=10.0),
        'decode_head': dict(lr_mult=10.0),
        'decode_head.token_pos': dict(lr_mult=10.0, decay_mult=0.0),  # the longest matching key wins
        'relative_position_bias_table': dict(decay_mult=0.0),
        'norm': dict(decay_mult=0.0),
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=5, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'))
