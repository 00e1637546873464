# Faster R-CNN + FPN on Multigrain's ResNet-50 (mmpretrain ResNet, stages at strides 4-32), DIOR.
#   python benchmarks/run.py --task detection \
#       --config configs/benchmarks/detection/faster_rcnn_multigrain_r50_dior.py --checkpoint multigrain_r50.pth
# The backbone is the checkpoint's (type='ConvertedBackbone': depth and BatchNorm numerics from its
# meta; any Multigrain depth works), with mmdet's ResNet fine-tuning settings: the stem and the
# first stage frozen, the pretrained BatchNorm statistics kept (frozen_stages=1, norm_eval=True).
# run.py sets the FPN's in_channels from the stage widths and the input mean/std from the meta.
# The FPN/RPN/RoI widths are the base's CPU-demo sizes (64; mmdet's recipe uses 256, see
# _base_/faster_rcnn_ringmoe_fpn.py for the keys to change together).
_base_ = ['./_base_/faster_rcnn_ringmoe_fpn.py', './_base_/dior.py', './_base_/schedule_demo.py',
          './_base_/default_runtime.py']

model = dict(
    backbone=dict(_delete_=True, type='ConvertedBackbone', out_indices=(0, 1, 2, 3), frozen_stages=1,
                  norm_eval=True),
    neck=dict(in_channels=[256, 512, 1024, 2048]),  # run.py sets these from the backbone's widths
    roi_head=dict(bbox_head=dict(num_classes=20)))
