# An mmpretrain ImageClassifier on a RingMoE backbone: global average pooling of the last stage
# and a linear head. benchmarks/run.py fills the backbone's architecture and the preprocessor's
# mean/std from the converted checkpoint's meta, init_cfg.checkpoint from --checkpoint, and the
# head's in_channels from the last stage width.
data_preprocessor = dict(
    type='ClsDataPreprocessor',
    mean=[123.675, 116.28, 103.53],  # replaced by the checkpoint modality's mean/std x 255
    std=[58.395, 57.12, 57.375],
    to_rgb=True)  # LoadImageFromFile reads BGR; the checkpoint's bands are R, G, B
model = dict(
    type='ImageClassifier',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='RingMoE',
        modality='optical',
        out_indices=(3, ),
        out_norms=True,  # stage 3's output norm is the pretrained final norm
        init_cfg=dict(type='Pretrained', checkpoint=None)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=45,  # set by each protocol config
        in_channels=256,  # run.py sets it from the backbone's last stage width
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
