# AIR-MOT-style satellite video in the MOT-Challenge layout (<root>/train/<SEQ>/img1, gt/gt.txt,
# seqinfo.ini; gt classes 1 = plane, 2 = ship). benchmarks/run.py points data_root at
# --data-root (or generated demo data), and the task's prepare step converts the MOT layout to
# the CocoVideo JSON that mmdet reads, into <work_dir>/annotations/, filling ann_file and
# data_prefix below from `mot_split`.
#
# Protocol: as mmdet's MOT17 "half" configs, the detector trains on the first half of every
# labelled sequence and the tracker is evaluated on the second half. A dataset with separate
# labelled validation videos: mot_split.val.folder=<folder> mot_split.val.frames=all
# mot_split.train.frames=all.
dataset_name = 'airmot'  # the results table's dataset column
data_root = 'data/airmot'
classes = ('plane', 'ship')
mot_split = dict(
    train=dict(folder='train', frames='first_half'),
    val=dict(folder='train', frames='second_half'))
img_scale = (256, 256)  # (w, h); the demo frames are 256 px, real satellite video ~1000 px

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    # Seen from above, any flip is a plausible scene.
    dict(type='RandomFlip', prob=[0.25, 0.25], direction=['horizontal', 'vertical']),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(
        type='TransformBroadcaster',
        transforms=[
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=img_scale, keep_ratio=True),
            dict(type='LoadTrackAnnotations'),
        ]),
    dict(type='PackTrackInputs'),
]
# The detector trains on single frames (ByteTrack.loss is the detector's loss), read from the
# CocoVideo JSON as plain COCO, as mmdet's ByteTrack configs do.
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        ann_file='',  # set by the task's prepare step
        data_prefix=dict(img='train'),
        metainfo=dict(classes=classes),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
# Validation tracks whole videos frame by frame (image-based sampling, mmdet's default).
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='TrackImgSampler'),
    dataset=dict(
        type='MOTChallengeDataset',
        data_root=data_root,
        ann_file='',  # set by the task's prepare step
        data_prefix=dict(img_path='train'),
        metainfo=dict(classes=classes),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# TrackEval's HOTA, CLEAR (MOTA) and Identity (IDF1) through mmdet's MOTChallengeMetric.
# benchmark='MOT15' turns off TrackEval's pedestrian-only preprocessing (which would drop every
# gt box whose class is not 1, and treat class 2 as a distractor): planes and ships are scored
# together, class-agnostically, as ByteTrack associates them. No tracklet interpolation.
val_evaluator = dict(
    type='MOTChallengeMetric', metric=['HOTA', 'CLEAR', 'Identity'], benchmark='MOT15')
test_evaluator = val_evaluator
