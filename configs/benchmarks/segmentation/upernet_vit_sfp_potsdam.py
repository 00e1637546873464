# UPerNet on DINO's plain ViT (mmpretrain VisionTransformer) through ViTDet's simple feature
# pyramid (benchmarks/models/simple_fpn.py), ISPRS Potsdam.
#   python benchmarks/run.py --task segmentation \
#       --config configs/benchmarks/segmentation/upernet_vit_sfp_potsdam.py --checkpoint dino_vits16.pth
# The ViT gives its last block's map (after the final norm) at stride 16 (out_type='featmap'; the
# class token stays in the sequence, so every checkpoint tensor has its place); its position
# embedding keeps the pretraining grid and is resized bicubically to each input's grid in the
# forward pass. The pyramid turns that map into strides 4, 8, 16, 32 (2 deconvs, 1 deconv,
# identity, max-pool), each out_channels wide; run.py sets its in_channels from the ViT's width.
# For a patch-8 ViT (dino_vits8) set neck.scales=(2, 1, 0.5, 0.25).
_base_ = ['./_base_/upernet_converted.py']
custom_imports = dict(imports=['benchmarks.models.registry', 'benchmarks.models.simple_fpn'],
                      allow_failed_imports=False)

model = dict(
    # out_indices as an int: mmpretrain rewrites a negative index in place, which a tuple refuses.
    backbone=dict(type='ConvertedBackbone', out_type='featmap', out_indices=-1, drop_path_rate=0.1),
    neck=dict(type='SimpleFeaturePyramid', in_channels=[384], out_channels=64, scales=(4, 2, 1, 0.5), num_outs=4),
    decode_head=dict(in_channels=[64, 64, 64, 64]),  # the pyramid's levels; run.py sets them
    auxiliary_head=dict(in_channels=64))
# No weight decay on the position embedding, the class token and the norms (as ViTDet and MAE).
optim_wrapper = dict(paramwise_cfg=dict(
    norm_decay_mult=0.0, custom_keys={'pos_embed': dict(decay_mult=0.0), 'cls_token': dict(decay_mult=0.0)}))
