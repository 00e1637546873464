# INRIA Holidays: <root>/jpg/GGGGVV.jpg, 500 groups (GGGG = 1000..1499), 1491 photos; photo VV=00
# is its group's query, the group's other photos are relevant to it, every photo is in the
# database. benchmarks/run.py points data_root at --data-root (or at generated demo data); the
# task's prepare hook (benchmarks/tasks/retrieval.py) writes <work_dir>/splits/{database,query}.json
# (mmpretrain BaseDataset annotation files) and sets ann_file and data_root below to them. It also
# applies `img_size` (the long side every photo is resized to) to the pipelines.
dataset_type = 'BaseDataset'  # mmpretrain's: reads the annotation json written by prepare
data_root = 'data/holidays'
img_size = 160  # the demo photos' long side; Multigrain reports Holidays at 224, 500 and 800
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=img_size, edge='long'),  # keeps the aspect (portrait photos too)
    dict(type='PackInputs'),
]
# Queries also carry their own database index: the metric removes the query from its ranking.
query_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=img_size, edge='long'),
    dict(type='PackInputs', meta_keys=('sample_idx', 'img_path', 'ori_shape', 'img_shape', 'db_index')),
]
# One photo per batch: photos differ in size and orientation, and a padded batch would change
# the pooled features.
database_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='', ann_file='',
                 pipeline=test_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='', ann_file='',
                 pipeline=query_pipeline))
test_dataloader = val_dataloader
# The Runner needs a train loader; the zero-epoch train loop never draws from it.
train_dataloader = database_dataloader
# mAP by the Holidays protocol (query out of its own ranking, trapezoidal AP, mean over queries)
# and the share of queries with a relevant photo in their top 1 and top 5.
val_evaluator = dict(type='HolidaysAveragePrecision', topk=(1, 5))
test_evaluator = val_evaluator
dataset_name = 'holidays'
split = 'test'  # Holidays is a test set: its queries against its database
primary_metric = 'retrieval/mAP'
