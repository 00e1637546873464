# UPerNet (Xiao et al. 2018) on a converted single-model backbone (ms2torch --family), sized for a
# CPU demo: the multi-scale backbones of the seed zoo (Multigrain's ResNet, BiT, DINO's ViT
# through a simple feature pyramid) inherit this and set their backbone's task arguments.
#
# type='ConvertedBackbone' builds the backbone the checkpoint holds (mmpretrain's ResNet, our
# ResNetV2BiT, mmpretrain's VisionTransformer) with the checkpoint's arguments; the keys a config
# sets here (out_indices ...) are added on top. benchmarks/run.py then sets the heads' (and a
# neck's) in_channels from the backbone's output widths, the data_preprocessor's mean/std from the
# checkpoint's input normalisation, and loads the backbone with its coverage check.
# Head widths are CPU-demo sizes: mmseg's ResNet-50 recipe uses UPerHead channels=512 and an
# FCNHead of 256 (set decode_head.channels / auxiliary_head.channels for real runs).
_base_ = ['./potsdam.py', './schedule_demo.py', './default_runtime.py']

num_classes = 6
norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs a process group; plain BN on CPU
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],  # replaced by the checkpoint's input mean/std x 255
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,  # LoadImageFromFile reads BGR; the zoo models take R, G, B
    pad_val=0,
    seg_pad_val=255,
    size=(256, 256))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(type='ConvertedBackbone', out_indices=(0, 1, 2, 3)),
    decode_head=dict(
        type='UPerHead',
        in_channels=[256, 512, 1024, 2048],  # run.py sets these from the backbone's widths
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
        in_channels=1024,  # the stride-16 map; run.py sets it from the backbone's widths
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
