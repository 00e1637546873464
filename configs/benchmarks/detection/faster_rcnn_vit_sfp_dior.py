# Faster R-CNN on DINO's plain ViT (mmpretrain VisionTransformer) with ViTDet's simple feature
# pyramid in place of the FPN (Li et al. 2022; benchmarks/models/simple_fpn.py), DIOR.
#   python benchmarks/run.py --task detection \
#       --config configs/benchmarks/detection/faster_rcnn_vit_sfp_dior.py --checkpoint dino_vits16.pth
# The ViT gives its last block's map (after the final norm) at stride 16 (out_type='featmap'; the
# class token stays in the sequence, so every checkpoint tensor has its place); its position
# embedding keeps the pretraining grid and is resized bicubically to each input's grid in the
# forward pass. The pyramid makes strides 4, 8, 16, 32 from it (2 deconvs, 1 deconv, identity,
# max-pool) plus a stride-64 max-pool level for the RPN, as ViTDet; run.py sets its in_channels
# from the ViT's width. For a patch-8 ViT (dino_vits8) set neck.scales=(2, 1, 0.5, 0.25).
# ViTDet also uses windowed attention in most blocks and layer-wise lr decay; this is the plain,
# globally attending ViT the checkpoint holds, fine-tuned with the base's AdamW schedule.
_base_ = ['./_base_/faster_rcnn_ringmoe_fpn.py', './_base_/dior.py', './_base_/schedule_demo.py',
          './_base_/default_runtime.py']
custom_imports = dict(imports=['benchmarks.models.registry', 'benchmarks.models.simple_fpn'],
                      allow_failed_imports=False)

model = dict(
    # out_indices as an int: mmpretrain rewrites a negative index in place, which a tuple refuses.
    backbone=dict(_delete_=True, type='ConvertedBackbone', out_type='featmap', out_indices=-1,
                  drop_path_rate=0.1),
    neck=dict(_delete_=True, type='SimpleFeaturePyramid', in_channels=[384], out_channels=64,
              scales=(4, 2, 1, 0.5), num_outs=5),
    roi_head=dict(bbox_head=dict(num_classes=20)))
# No weight decay on the position embedding, the class token and the norms (as ViTDet and MAE).
optim_wrapper = dict(paramwise_cfg=dict(
    norm_decay_mult=0.0, custom_keys={'pos_embed': dict(decay_mult=0.0), 'cls_token': dict(decay_mult=0.0)}))
