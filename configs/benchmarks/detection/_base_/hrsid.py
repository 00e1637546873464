# HRSID (SAR ship detection) in the layout of the released HRSID_JPG folder, read by mmdet's
# CocoDataset and evaluated by its CocoMetric:
#   JPEGImages/*.jpg (800x800, 8-bit SAR amplitude, the band replicated to 3 channels),
#   annotations/train2017.json, annotations/test2017.json (one category: ship).
# Tiles are used at their native size: 800x800 for real HRSID, 256x256 for the generated demo.
# benchmarks/run.py points data_root at --data-root, or at generated demo data without it; the
# evaluator's ann_file is relative to data_root (the detection task resolves it).
dataset_type = 'CocoDataset'
dataset_name = 'hrsid'  # the results table's dataset column
data_root = 'data/hrsid'
metainfo = dict(classes=('ship', ))
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale_factor=1.0, keep_ratio=True),  # native size (sets the scale meta)
    dict(type='RandomFlip', prob=0.75, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale_factor=1.0, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        metainfo=metainfo,
        data_root=data_root,
        ann_file='annotations/train2017.json',
        data_prefix=dict(img='JPEGImages/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        metainfo=metainfo,
        data_root=data_root,
        ann_file='annotations/test2017.json',
        data_prefix=dict(img='JPEGImages/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader
# COCO evaluation against the released test annotations (their polygon areas decide the
# small/medium/large split): coco/bbox_mAP (IoU 0.50:0.95, the primary metric) and coco/bbox_mAP_50.
val_evaluator = dict(
    type='CocoMetric',
    ann_file='annotations/test2017.json',  # relative to data_root; resolved by benchmarks/tasks/detection.py
    metric='bbox',
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator
primary_metric = 'coco/bbox_mAP'
