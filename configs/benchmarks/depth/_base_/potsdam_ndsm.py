# ISPRS Potsdam height estimation: RGB tiles and nDSM heights cut from the orthophotos and the
# normalised DSMs (layout and synthetic twin: benchmarks/datasets/ndsm.py):
#   <data_root>/img_dir/{train,val}/top_potsdam_<row>_<col>_RGB_<i>_<j>.png
#   <data_root>/ndsm_dir/{train,val}/top_potsdam_<row>_<col>_RGB_<i>_<j>.png   uint16, centimetres
# Heights here are 16-bit PNGs in centimetres (LoadDepthAnnotation's depth_rescale_factor=0.01
# gives metres); for float32 TIFF in metres set depth_map_suffix='.tif' and depth_rescale_factor=1.0.
# The dataset class and the handling of zero-height ground are as in vaihingen_ndsm.py: pixels at
# or below min_depth_eval are neither trained nor scored.
dataset_type = 'NYUDataset'  # mmseg's generic depth dataset (its NYU metainfo is unused here)
dataset_name = 'potsdam_ndsm'  # the results table's dataset column
data_root = 'data/potsdam_ndsm'
crop_size = (128, 128)  # the demo tiles are 128 px; real tiles are typically cut at 512
min_depth = 1e-3  # metres: the bins' and the evaluation's lower end
max_depth = 40.0  # metres
height_loader = dict(type='LoadDepthAnnotation', depth_rescale_factor=0.01)  # PNG16 centimetres
meta_keys = ('img_path', 'depth_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor',
             'flip', 'flip_direction')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    height_loader,
    # Flips in both directions; no photometric jitter (brightness carries height cues).
    dict(type='RandomFlip', prob=[0.25, 0.25], direction=['horizontal', 'vertical']),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
test_pipeline = [  # whole tiles at native resolution
    dict(type='LoadImageFromFile'),
    height_loader,
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        img_suffix='.png',
        depth_map_suffix='.png',
        data_prefix=dict(img_path='img_dir/train', depth_map_path='ndsm_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        test_mode=True,
        img_suffix='.png',
        depth_map_suffix='.png',
        data_prefix=dict(img_path='img_dir/val', depth_map_path='ndsm_dir/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# rmse (metres, lower is better) is the primary metric; also abs_rel, log10, d1-d3, sq_rel,
# rmse_log, silog, each averaged over images.
val_evaluator = dict(type='DepthMetric', min_depth_eval=min_depth, max_depth_eval=max_depth)
test_evaluator = val_evaluator
primary_metric = 'rmse'
split = 'val'
