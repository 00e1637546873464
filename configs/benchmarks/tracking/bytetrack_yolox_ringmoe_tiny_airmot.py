# ByteTrack on a YOLOX detector with a RingMoE backbone, AIR-MOT-style satellite video (optical),
# sized for a CPU demo.
#
# The backbone's architecture and the data_preprocessor's mean/std are filled by
# benchmarks/run.py from the converted checkpoint's meta; init_cfg.checkpoint from --checkpoint
# ('none' trains the same model from random weights). The backbone sits at detector.backbone
# (the task's SPEC says so); everything else (neck, head) is a new downstream head.
_base_ = ['./_base_/airmot.py', './_base_/schedule_demo.py', './_base_/default_runtime.py']

primary_metric = 'motchallenge-metric/HOTA'
norm_cfg = dict(type='BN', momentum=0.03, eps=0.001)  # YOLOX's BN; SyncBN needs a process group
data_preprocessor = dict(
    type='TrackDataPreprocessor',
    mean=[123.675, 116.28, 103.53],  # replaced by the checkpoint modality's mean/std x 255
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,  # LoadImageFromFile reads BGR; the checkpoint's bands are R, G, B
    pad_size_divisor=32,
    # Training batches are single frames (detector training); validation batches are videos.
    use_det_processor=True)
model = dict(
    type='ByteTrack',
    data_preprocessor=data_preprocessor,
    detector=dict(
        type='YOLOX',
        backbone=dict(
            type='RingMoE',
            modality='optical',
            # Strides 4, 8, 16: AIR-MOT objects are 10-30 px, too small for YOLOX's usual 8-32.
            out_indices=(0, 1, 2),
            out_norms=True,
            drop_path_rate=0.1,
            init_cfg=dict(type='Pretrained', checkpoint=None)),
        neck=dict(
            type='YOLOXPAFPN',
            in_channels=[32, 64, 128],  # run.py sets these from the backbone's stage widths
            out_channels=64,
            num_csp_blocks=1,
            norm_cfg=norm_cfg,
            act_cfg=dict(type='Swish')),
        bbox_head=dict(
            type='YOLOXHead',
            num_classes=2,
            in_channels=64,
            feat_channels=64,
            stacked_convs=2,
            strides=(4, 8, 16),  # run.py sets these from the backbone's out_indices
            norm_cfg=norm_cfg,
            act_cfg=dict(type='Swish')),
        train_cfg=dict(assigner=dict(type='SimOTAAssigner', center_radius=2.5)),
        # score_thr = the tracker's low threshold: lower boxes would be dropped by ByteTracker anyway.
        test_cfg=dict(score_thr=0.1, nms=dict(type='nms', iou_threshold=0.7), max_per_img=100)),
    # mmdet's ByteTrack settings (MOT17): high/low detection scores for the two association
    # rounds, the score that starts a track, IoU gates, frames a lost track is kept.
    tracker=dict(
        type='ByteTracker',
        motion=dict(type='KalmanFilter'),
        obj_score_thrs=dict(high=0.6, low=0.1),
        init_track_thr=0.7,
        weight_iou_with_det_scores=True,
        match_iou_thrs=dict(high=0.1, low=0.5, tentative=0.3),
        num_frames_retain=30))
