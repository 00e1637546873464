# DIOR (horizontal boxes) in the dataset's own VOC-style layout, read by mmdet's XMLDataset:
#   JPEGImages-trainval/*.jpg, JPEGImages-test/*.jpg, Annotations/*.xml,
#   ImageSets/Main/{train,val,test}.txt
# mmdet's VOCDataset only knows VOC2007/2012 folders, so the plain XMLDataset is used with
# DIOR's 20 classes (spelled as in its XML files) and its two image folders.
# Training reads train.txt, evaluation test.txt (the published protocol trains on train+val: write
# ImageSets/Main/trainval.txt = train.txt + val.txt and pass
# --cfg-options train_dataloader.dataset.ann_file=ImageSets/Main/trainval.txt).
# Images are used at their native size: 800x800 for real DIOR (the protocol's input size),
# 256x256 for the generated demo data (smaller than real, so that CPU runs stay short).
# benchmarks/run.py points data_root at --data-root, or at generated demo data without it.
dataset_type = 'XMLDataset'
dataset_name = 'dior'  # the results table's dataset column
split = 'test'  # evaluated on ImageSets/Main/test.txt (the results' split column)
data_root = 'data/dior'
classes = ('airplane', 'airport', 'baseballfield', 'basketballcourt', 'bridge', 'chimney', 'dam',
           'Expressway-Service-area', 'Expressway-toll-station', 'golffield', 'groundtrackfield',
           'harbor', 'overpass', 'ship', 'stadium', 'storagetank', 'tenniscourt', 'trainstation',
           'vehicle', 'windmill')
metainfo = dict(classes=classes)
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale_factor=1.0, keep_ratio=True),  # native size (sets the scale meta)
    dict(type='RandomFlip', prob=0.75, direction=['horizontal', 'vertical', 'diagonal']),  # overhead views
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale_factor=1.0, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),  # after Resize: boxes stay in original pixels
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
        ann_file='ImageSets/Main/train.txt',
        data_prefix=dict(sub_data_root=''),
        img_subdir='JPEGImages-trainval',
        ann_subdir='Annotations',
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
        ann_file='ImageSets/Main/test.txt',
        data_prefix=dict(sub_data_root=''),
        img_subdir='JPEGImages-test',
        ann_subdir='Annotations',
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader
# mmdet's VOC evaluator (all-point 'area' AP, as VOC2010+; DIOR's results are VOC-style) at ten IoU
# thresholds: pascal_voc/AP50 is mAP50, DIOR's headline metric (the primary one); pascal_voc/mAP is
# the mean over IoU 0.50:0.05:0.95 (COCO's averaging, VOC's AP per threshold). 'difficult' objects
# are ignored, as in VOC.
val_evaluator = dict(
    type='VOCMetric',
    metric='mAP',
    eval_mode='area',
    iou_thrs=[0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
test_evaluator = val_evaluator
primary_metric = 'pascal_voc/AP50'
