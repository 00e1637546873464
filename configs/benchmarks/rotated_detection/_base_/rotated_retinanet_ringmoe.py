# Rotated RetinaNet (le90) on a RingMoE backbone: mmrotate 1.0.0rc1's
# rotated-retinanet-rbox-le90_r50_fpn_1x_dota with our backbone and CPU-demo widths.
# Every op it uses has a CPU kernel in mmcv 2.1.0 (box_iou_rotated, nms_rotated; mmdet's
# FocalLoss falls back to PyTorch off CUDA), so it trains on a CPU
# (../shared/design/stack.md, beside the repository).
#
# The backbone's architecture and the data_preprocessor's mean/std are filled by
# benchmarks/run.py from the converted checkpoint's meta; run.py also sets neck.in_channels
# from the backbone's stage widths and init_cfg.checkpoint from --checkpoint.
# For the paper-sized head use --cfg-options model.neck.out_channels=256
# model.bbox_head.in_channels=256 model.bbox_head.feat_channels=256 model.bbox_head.stacked_convs=4
angle_version = 'le90'
num_classes = 15  # each dataset config sets its own
model = dict(
    type='mmdet.RetinaNet',
    data_preprocessor=dict(
        type='mmdet.DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],  # replaced by the checkpoint modality's mean/std x 255
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,  # LoadImageFromFile reads BGR; the checkpoint's bands are R, G, B
        pad_size_divisor=32,
        boxtype2tensor=False),
    backbone=dict(
        type='RingMoE',
        modality='optical',
        out_indices=(1, 2, 3),  # strides 8, 16, 32: RetinaNet's FPN starts at stride 8
        out_norms=True,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=None)),
    neck=dict(
        type='mmdet.FPN',
        in_channels=[64, 128, 256],  # run.py sets these from the backbone's stage widths
        out_channels=128,
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5),  # strides 8 .. 128
    bbox_head=dict(
        type='mmdet.RetinaHead',
        num_classes=num_classes,
        in_channels=128,
        stacked_convs=2,
        feat_channels=128,
        anchor_generator=dict(
            type='FakeRotatedAnchorGenerator',
            angle_version=angle_version,
            octave_base_scale=4,
            scales_per_octave=3,
            ratios=[1.0, 0.5, 2.0],
            strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(
            type='DeltaXYWHTRBBoxCoder',
            angle_version=angle_version,
            norm_factor=None,
            edge_swap=True,
            proj_xy=True,
            target_means=(.0, .0, .0, .0, .0),
            target_stds=(1.0, 1.0, 1.0, 1.0, 1.0)),
        loss_cls=dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='mmdet.L1Loss', loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(
            type='mmdet.MaxIoUAssigner',
            pos_iou_thr=0.5,
            neg_iou_thr=0.4,
            min_pos_iou=0,
            ignore_iof_thr=-1,
            iou_calculator=dict(type='RBboxOverlaps2D')),
        sampler=dict(type='mmdet.PseudoSampler'),  # focal loss uses every anchor
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(
        nms_pre=2000,
        min_bbox_size=0,
        score_thr=0.05,
        nms=dict(type='nms_rotated', iou_threshold=0.1),
        max_per_img=2000))
