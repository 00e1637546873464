# HRSC2016 as released: FullDataSet/AllImages/*.bmp, FullDataSet/Annotations/*.xml
# (HRSC_Objects/HRSC_Object with mbox_cx, mbox_cy, mbox_w, mbox_h, mbox_ang) and
# ImageSets/{trainval,test}.txt. Read by mmrotate's HRSCDataset, one class 'ship'
# (classwise=False, the usual protocol); mAP by DOTAMetric at IoU 0.5 both ways the papers
# report it: VOC07 11-point (voc07/mAP, the primary) and VOC12 area (voc12/mAP).
dataset_type = 'HRSCDataset'
dataset_name = 'hrsc2016'  # the results table's dataset column
primary_metric = 'voc07/mAP'
data_root = 'data/HRSC2016'
img_scale = (256, 256)  # the demo images are 256 px; the HRSC2016 protocol uses (800, 512)
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
        ann_file='ImageSets/trainval.txt',
        data_prefix=dict(sub_data_root='FullDataSet/'),
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
        ann_file='ImageSets/test.txt',
        data_prefix=dict(sub_data_root='FullDataSet/'),
        test_mode=True,
        pipeline=val_pipeline))
test_dataloader = val_dataloader
val_evaluator = [
    dict(type='DOTAMetric', metric='mAP', eval_mode='11points', prefix='voc07'),
    dict(type='DOTAMetric', metric='mAP', eval_mode='area', prefix='voc12'),
]
test_evaluator = val_evaluator
