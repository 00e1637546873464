# Faster R-CNN with FPN on a RingMoE backbone (all four stages, strides 4-32).
#
# The backbone's architecture (embed_dim, depths, num_heads, window_size, patch_size,
# mlp_ratio, num_experts, modalities) and the data_preprocessor's mean/std are filled by
# benchmarks/run.py from the converted checkpoint's meta (the chosen modality's mean/std x 255);
# set a field here to pin it instead (a checkpoint that disagrees is then a coverage error).
# run.py also sets neck.in_channels from the stage widths, and init_cfg.checkpoint from
# --checkpoint ('none' trains the same model from random weights).
# Anchors: two scales per level (4 and 8 x stride: 16-32 px at stride 4 up to 256-512 px at 64)
# so that small remote-sensing objects (vehicles, HRSID ships of 10-30 px) still get positive
# anchors at the RPN's IoU 0.3 floor. Widths are sized for the tiny backbone on a CPU (stage
# widths 32-256): FPN/RPN/RoI at 64 channels and a 256-wide box head, where mmdet's ResNet-50
# recipe uses 256 and 1024 (set neck.out_channels, rpn_head.in_channels/feat_channels,
# roi_head.bbox_roi_extractor.out_channels, bbox_head.in_channels/fc_out_channels together for a
# larger backbone); the assigners, samplers and NMS settings are mmdet's standard ones.
model = dict(
    type='FasterRCNN',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],  # replaced by the checkpoint modality's mean/std x 255
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,  # LoadImageFromFile reads BGR; the checkpoint's bands are R, G, B
        pad_size_divisor=32),
    backbone=dict(
        type='RingMoE',
        modality='optical',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=None)),  # the converted .pth (run.py --checkpoint)
    neck=dict(
        type='FPN',
        in_channels=[32, 64, 128, 256],  # run.py sets these from the backbone's stage widths
        out_channels=64,
        num_outs=5),
    rpn_head=dict(
        type='RPNHead',
        in_channels=64,
        feat_channels=64,
        anchor_generator=dict(
            type='AnchorGenerator', scales=[4, 8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0], target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    roi_head=dict(
        type='StandardRoIHead',
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),  # mmcv's CPU op
            out_channels=64,
            featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(
            type='Shared2FCBBoxHead',
            in_channels=64,
            fc_out_channels=256,
            roi_feat_size=7,
            num_classes=20,  # set by each dataset's config
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0], target_stds=[0.1, 0.1, 0.2, 0.2]),
            reg_class_agnostic=False,
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0))),
    train_cfg=dict(
        rpn=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                          match_low_quality=True, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5, neg_pos_ub=-1,
                         add_gt_as_proposals=False),
            allowed_border=-1,
            pos_weight=-1,
            debug=False),
        rpn_proposal=dict(nms_pre=2000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                          match_low_quality=False, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1,
                         add_gt_as_proposals=True),
            pos_weight=-1,
            debug=False)),
    test_cfg=dict(
        rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)))
