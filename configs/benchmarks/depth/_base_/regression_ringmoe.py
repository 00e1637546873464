# DepthEstimator: RingMoE backbone + plain regression head (benchmarks/models/depth.py): the same
# FPN pixel decoder as BinsFormer, a 1-channel output squashed into [min_depth, max_depth], SILog.
norm_cfg = dict(type='GN', num_groups=8, requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],  # replaced by the checkpoint modality's mean/std x 255
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=0,  # padded height 0 is masked by SiLogLoss
    size=(128, 128))
model = dict(
    type='DepthEstimator',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='RingMoE',
        modality='optical',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=None)),
    decode_head=dict(
        type='RegressionDepthHead',
        in_channels=[32, 64, 128, 256],  # run.py sets these from the backbone's stage widths
        in_index=[0, 1, 2, 3],
        channels=64,
        min_depth=1e-3,
        max_depth=40.0,  # metres; the dataset config's max_depth_eval is the same 40
        norm_cfg=norm_cfg,
        loss_decode=dict(type='SiLogLoss', loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
