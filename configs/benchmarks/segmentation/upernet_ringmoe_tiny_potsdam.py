# UPerNet on a RingMoE backbone, ISPRS Potsdam (optical), sized for a CPU demo.
#
# The backbone's architecture (embed_dim, depths, num_heads, window_size, patch_size,
# mlp_ratio, num_experts, modalities) and the data_preprocessor's mean/std are filled by
# benchmarks/run.py from the converted checkpoint's meta; set a field here to pin it instead
# (a checkpoint that disagrees is then a coverage error). run.py also fills
# init_cfg.checkpoint from --checkpoint ('none' trains the same model from random weights).
_base_ = ['./_base_/potsdam.py', './_base_/schedule_demo.py', './_base_/default_runtime.py']

num_classes = 6
norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs a process group; plain BN on CPU
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],  # replaced by the checkpoint modality's mean/std x 255
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,  # LoadImageFromFile reads BGR; the checkpoint's bands are R, G, B
    pad_val=0,
    seg_pad_val=255,
    size=(256, 256))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='RingMoE',
        modality='optical',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=None)),
    decode_head=dict(
        type='UPerHead',
        in_channels=[32, 64, 128, 256],  # run.py sets these from the backbone's stage widths
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=64,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=128,  # stage 3; run.py sets it from the backbone's stage widths
        in_index=2,
        channels=32,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
