# ISPRS Vaihingen height estimation: IRRG tiles and nDSM heights cut from the orthophotos and the
# normalised DSMs (layout and synthetic twin: benchmarks/datasets/ndsm.py):
#   <data_root>/img_dir/{train,val}/top_mosaic_09cm_area<N>_<i>_<j>.png
#   <data_root>/ndsm_dir/{train,val}/top_mosaic_09cm_area<N>_<i>_<j>.tif   float32, metres
# mmseg's NYUDataset is its generic depth dataset: it pairs <stem><img_suffix> under img_path
# with <stem><depth_map_suffix> under depth_map_path (its NYU scene-class metainfo is unused here).
# For 16-bit PNG heights in centimetres set depth_map_suffix='.png' and depth_rescale_factor=0.01.
#
# Ground: pixels whose height is <= min_depth_eval are not scored (DepthMetric) and not trained
# (SiLogLoss masks targets <= 1e-6). Real nDSMs are 0 on bare ground, so as is they are scored on
# above-ground pixels only; to score the ground too, write heights + an offset (e.g. + 0.1 m) when
# cutting the tiles. The synthetic data have ground at ~0.1 m, so every pixel is scored there.
dataset_type = 'NYUDataset'
dataset_name = 'vaihingen_ndsm'  # the results table's dataset column
data_root = 'data/vaihingen_ndsm'
crop_size = (128, 128)  # the demo tiles are 128 px; real tiles are typically cut at 512
min_depth = 1e-3  # metres: the bins' and the evaluation's lower end
max_depth = 40.0  # metres: above the tallest Vaihingen/Potsdam buildings and trees
height_loader = dict(type='LoadDepthAnnotation', depth_rescale_factor=1.0)  # float TIFF in metres
meta_keys = ('img_path', 'depth_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor',
             'flip', 'flip_direction')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    height_loader,
    # Flips in both directions: nadir tiles have no up. No photometric jitter: image brightness
    # carries height cues (roof shade in the synthetic data) that jitter would blur.
    dict(type='RandomFlip', prob=[0.25, 0.25], direction=['horizontal', 'vertical']),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
test_pipeline = [  # whole tiles at native resolution: heights do not change with scale
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
        depth_map_suffix='.tif',
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
        depth_map_suffix='.tif',
        data_prefix=dict(img_path='img_dir/val', depth_map_path='ndsm_dir/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# rmse (metres, lower is better) is the primary metric; also abs_rel, log10, d1-d3 (delta <
# 1.25, 1.25^2, 1.25^3), sq_rel, rmse_log, silog, each averaged over images.
val_evaluator = dict(type='DepthMetric', min_depth_eval=min_depth, max_depth_eval=max_depth)
test_evaluator = val_evaluator
primary_metric = 'rmse'
split = 'val'
