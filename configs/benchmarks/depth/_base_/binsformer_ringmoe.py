# DepthEstimator: RingMoE backbone + BinsFormer head (benchmarks/models/depth.py), sized for the
# tiny backbone on a CPU. The dataset config supplies min_depth/max_depth and crop_size.
norm_cfg = dict(type='GN', num_groups=8, requires_grad=True)  # batch-size independent
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],  # replaced by the checkpoint modality's mean/std x 255
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,  # LoadImageFromFile reads BGR; the files hold R,G,B (Vaihingen: IR,R,G)
    pad_val=0,
    seg_pad_val=0,  # padded height 0 is masked by SiLogLoss; mmseg's default 255 would be 255 m
    size=(128, 128))
model = dict(
    type='DepthEstimator',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='RingMoE',
        modality='optical',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=None)),
    decode_head=dict(
        type='BinsFormerHead',
        in_channels=[32, 64, 128, 256],  # run.py sets these from the backbone's stage widths
        in_index=[0, 1, 2, 3],
        channels=64,  # pixel decoder (FPN) width
        embed_dim=64,  # query / memory / pixel embedding width
        num_bins=32,
        num_layers=3,  # one pass over the 3 memory levels (1/32, 1/16, 1/8); 6-9 for real runs
        num_heads=4,
        ffn_channels=128,
        num_memory_levels=3,
        aux_loss_weight=1.0,  # deep supervision: SILog on layers 1..L-1 as on the final layer
        min_depth=1e-3,
        max_depth=40.0,  # metres; the dataset config's max_depth_eval is the same 40
        norm_cfg=norm_cfg,
        loss_decode=dict(type='SiLogLoss', loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
