# BIT (Chen et al. 2021) on a RingMoE backbone: the model shared by the change detection configs.
#
# Both dates go through ONE RingMoE (shared weights, one batch of 2B); ScaleFusionNeck fuses
# its four stages into one 32-channel stride-4 map per date; BITHead tokenizes (4 tokens per
# date), encodes the 8 tokens, decodes them back onto each date's pixels, and classifies
# |A - B| into unchanged / changed (benchmarks/models/change_detection.py).
num_classes = 2
norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs a process group; plain BN on CPU
data_preprocessor = dict(
    type='SegDataPreProcessor',
    # Date A's R, G, B then date B's; replaced by the checkpoint modality's mean/std x 255 (twice).
    mean=[123.675, 116.28, 103.53, 123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375, 58.395, 57.12, 57.375],
    bgr_to_rgb=False,  # LoadImagePairFromFile already reads R, G, B
    pad_val=0,
    seg_pad_val=255,
    size_divisor=32)  # training crops share one size; no padding of whole small images to a crop
model = dict(
    type='SiameseEncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='RingMoE',
        modality='optical',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=None)),
    neck=dict(
        type='ScaleFusionNeck',
        in_channels=[32, 64, 128, 256],  # the task's fit_heads sets these from the backbone's widths
        out_channels=32,
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='BITHead',
        in_channels=32,
        channels=32,
        token_len=4,
        enc_depth=1,
        dec_depth=8,  # the paper's BIT: 1 encoder, 8 decoder layers
        heads=4,  # the paper's code uses 8 heads of 64 (BITHead's defaults); 4 x 16 keeps the
        head_dim=16,  # tiny demo's head cheaper than its backbone on a CPU
        mlp_ratio=2.0,
        dropout_ratio=0.0,
        num_classes=num_classes,
        out_channels=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        # Cross entropy with the changed class weighted 5x: changed pixels are ~5% of LEVIR-CD
        # (~7% of the demo), and plain CE sat at "nothing changed" (F1 0) through 100 demo
        # iterations while the weighted loss reached F1 ~70. BIT's 200-epoch protocol uses plain
        # CE: --cfg-options model.decode_head.loss_decode.class_weight=None
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                         class_weight=[1.0, 5.0])),
    train_cfg=dict(),
    # BIT evaluates 256 px crops: a sliding window of 256 with stride 256 does the same on the
    # full 1024 px LEVIR-CD tiles (and is the whole image for 256 px data).
    test_cfg=dict(mode='slide', crop_size=(256, 256), stride=(256, 256)))
