# RetinaNet + FPN on a RingMoE backbone (optical modality), DIOR: the one-stage second head.
# Same data, schedule and metrics as faster_rcnn_ringmoe_tiny_dior.py (pascal_voc/AP50 primary).
#   python benchmarks/run.py --task detection --config configs/benchmarks/detection/retinanet_ringmoe_tiny_dior.py \
#       --checkpoint ringmoe_tiny.pth [--data-root data/DIOR]
# As in mmdet's RetinaNet, the FPN takes strides 8-32 (stages 2-4; out_indices=(1, 2, 3)) and adds
# P6/P7 on the last input. The backbone's architecture, mean/std and the FPN's in_channels are
# filled by benchmarks/run.py (see _base_/faster_rcnn_ringmoe_fpn.py). Focal loss runs mmdet's
# PyTorch fallback on CPU (mmcv's sigmoid_focal_loss op is CUDA-only). FPN and head are 64 channels
# wide for the tiny backbone on a CPU (mmdet's ResNet-50 recipe: 256).
_base_ = ['./_base_/dior.py', './_base_/schedule_demo.py', './_base_/default_runtime.py']

model = dict(
    type='RetinaNet',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],  # replaced by the checkpoint modality's mean/std x 255
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='RingMoE',
        modality='optical',
        out_indices=(1, 2, 3),
        out_norms=True,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=None)),  # the converted .pth (run.py --checkpoint)
    neck=dict(
        type='FPN',
        in_channels=[64, 128, 256],  # run.py sets these from the backbone's stage widths
        out_channels=64,
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5),
    bbox_head=dict(
        type='RetinaHead',
        num_classes=20,
        in_channels=64,
        stacked_convs=4,
        feat_channels=64,
        anchor_generator=dict(
            type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
            strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0], target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
        sampler=dict(type='PseudoSampler'),  # focal loss uses all anchors
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=100))
