# BIT's reference model: ResNet-18 + BIT head on LEVIR-CD, trained from scratch here (no
# download; BIT itself starts from ImageNet weights). Run it with --checkpoint none.
#
# As in BIT's "ResNet18_S4" the backbone keeps three stages, the third dilated instead of
# strided (strides 4, 8, 8); ScaleFusionNeck brings them to one 32-channel stride-4 map per
# date (BIT upsamples its last stage by 2 and projects to 32 channels). This config sets its
# own widths; the task's fit_heads only sizes necks of RingMoE backbones.
_base_ = ['./bit_ringmoe_tiny_levir_cd.py']
backbone_name = 'resnet18'  # the results' backbone column (the runner would call it ringmoe)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNetV1c',
        depth=18,
        in_channels=3,  # per date: the siamese segmentor feeds each date's 3 channels separately
        num_stages=3,
        out_indices=(0, 1, 2),
        strides=(1, 2, 1),
        dilations=(1, 1, 2),
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        contract_dilation=True,
        init_cfg=None),
    neck=dict(in_channels=[64, 128, 256]))
