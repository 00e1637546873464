# DOTA-style data (DOTA v1.0 classes): <split>/images/*.png and <split>/labelTxt/*.txt, lines
# 'x1 y1 x2 y2 x3 y3 x4 y4 class difficult', raw files with 'imagesource:'/'gsd:' headers or
# the patches of mmrotate's tools/data/dota/split (for 4000 px DOTA images, split first:
# 1024 px patches, point ann_file at <split>/annfiles/ then). Read by DOTATxtDataset
# (benchmarks/datasets/rotated_loaders.py); mAP by mmrotate's DOTAMetric (VOC07 11-point,
# IoU 0.5). Train on train/, evaluate on val/ (DOTA's test labels are not public).
dataset_type = 'DOTATxtDataset'
dataset_name = 'dota'  # the results table's dataset column
primary_metric = 'dota/mAP'
data_root = 'data/DOTA'
img_scale = (256, 256)  # the demo images are 256 px; the DOTA protocol trains on 1024 px patches
train_pipeline = [
    dict(type='mmdet.LoadImageFromFile'),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(type='mmdet.Resize', scale=img_scale, keep_ratio=True),
    dict(type='mmdet.RandomFlip', prob=0.75, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='mmdet.PackDetInputs')
]
val_pipeline = [
    dict(type='mmdet.LoadImageFromFile'),
    dict(type='mmdet.Resize', scale=img_scale, keep_ratio=True),
    # after Resize, so that the ground truth stays in original coordinates
    dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(type='mmdet.PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='train/labelTxt/',
        data_prefix=dict(img_path='train/images/'),
        filter_cfg=dict(filter_empty_gt=True),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='val/labelTxt/',
        data_prefix=dict(img_path='val/images/'),
        test_mode=True,
        pipeline=val_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='DOTAMetric', metric='mAP', eval_mode='11points')
test_evaluator = val_evaluator
