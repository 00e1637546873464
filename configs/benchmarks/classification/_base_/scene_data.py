# Scene classification data: a folder per class, no shipped split. benchmarks/run.py points
# data_root at --data-root (or at generated demo data); the task's prepare hook
# (benchmarks/tasks/classification.py) then draws the stratified split of `train_ratio` of each
# class with `split_seed`, writes <work_dir>/splits/{train,val,classes}.txt and sets ann_file,
# data_prefix and classes below to them. It also applies `img_size` to the pipelines, so
# `--cfg-options img_size=224 train_ratio=0.2` is all it takes to change either.
dataset_type = 'CustomDataset'
data_root = 'data/scene'
split_seed = 0  # fixed, so that every training seed sees the same split
img_size = 64  # the demo images are 64 px; the usual protocol is 224 (NWPU 256 px, AID 600 px)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.5, 1.0)),
    dict(type='RandomFlip', prob=[0.25, 0.25], direction=['horizontal', 'vertical']),  # nadir views
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(img_size, img_size)),  # both datasets are square
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='', ann_file='',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='', ann_file='',
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
# Overall accuracy is top-1 over all test images ('accuracy/top1', the primary metric).
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator
primary_metric = 'accuracy/top1'
