# DIOR-R (20 classes) as released: JPEGImages-trainval/*.jpg, JPEGImages-test/*.jpg,
# 'Annotations/Oriented Bounding Boxes/*.xml' (VOC-like, <robndbox> corners) and
# ImageSets/Main/{train,val,test}.txt. Read by mmrotate's DIORDataset; mAP by DOTAMetric
# (VOC07 11-point, IoU 0.5). Trained on train + val, evaluated on test, as in the paper:
# DIOR-R ships no trainval.txt, so the task's prepare hook writes the union of train.txt and
# val.txt into the work dir and points ann_file there (benchmarks/tasks/rotated_detection.py).
dataset_type = 'DIORDataset'
dataset_name = 'dior-r'  # the results table's dataset column
primary_metric = 'dota/mAP'  # DOTAMetric's default prefix
data_root = 'data/DIOR'
img_scale = (256, 256)  # the demo images are 256 px; DIOR-R images are 800 px, trained at 800
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
        ann_file='ImageSets/Main/trainval.txt',  # written by the prepare hook when absent
        data_prefix=dict(img_path='JPEGImages-trainval'),
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
        ann_file='ImageSets/Main/test.txt',
        data_prefix=dict(img_path='JPEGImages-test'),
        test_mode=True,
        pipeline=val_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='DOTAMetric', metric='mAP', eval_mode='11points')
test_evaluator = val_evaluator
