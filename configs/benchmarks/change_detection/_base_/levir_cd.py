# LEVIR-CD in its released layout: {train,val,test}/{A,B,label}/<name>.png, 1024x1024 RGB
# pairs, labels 0 (unchanged) / 255 (changed). mmseg's LEVIRCDDataset lists the pairs;
# LoadImagePairFromFile + ConcatCDInput give a 6-channel input (date A's R,G,B, then B's);
# BinarizeChangeMask turns 255 into 1 (LoadAnnotations alone would keep 255 = ignore).
# Training crops 256 px patches and evaluation slides 256 px windows (BIT's protocol:
# 256x256 crops). benchmarks/run.py points data_root at --data-root, or at generated demo data.
dataset_type = 'LEVIRCDDataset'
dataset_name = 'levir_cd'  # the results table's dataset column
split = 'val'  # the evaluated split (val_dataloader); the paper's tables use test
data_root = 'data/levir_cd'
crop_size = (256, 256)
train_pipeline = [
    dict(type='LoadImagePairFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='BinarizeChangeMask', threshold=127),
    dict(type='ConcatCDInput'),  # flips and crops below move both dates and the mask together
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=[0.25, 0.25], direction=['horizontal', 'vertical']),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImagePairFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='BinarizeChangeMask', threshold=127),
    dict(type='ConcatCDInput'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='train/A', img_path2='train/B', seg_map_path='train/label'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='val/A', img_path2='val/B', seg_map_path='val/label'),
        pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='test/A', img_path2='test/B', seg_map_path='test/label'),
        pipeline=test_pipeline))
val_evaluator = dict(type='ChangeDetectionMetric')  # change/F1, change/IoU, precision, recall, OA (%)
test_evaluator = val_evaluator
