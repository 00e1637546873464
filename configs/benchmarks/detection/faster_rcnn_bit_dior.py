# Faster R-CNN + FPN on a BiT ResNet-v2 (GroupNorm + weight standardisation; our twin
# ResNetV2BiT), DIOR. The four stage maps are normalised as the network uses them next
# (norm_outputs, benchmarks/models/resnetv2.py); the stem and first stage are frozen as mmdet
# does for ResNets (GroupNorm keeps no statistics, so nothing else needs freezing).
#   python benchmarks/run.py --task detection \
#       --config configs/benchmarks/detection/faster_rcnn_bit_dior.py --checkpoint bit_m_r50x1.pth
# run.py sets the FPN's in_channels from the stage widths and the input mean/std from the meta.
_base_ = ['./_base_/faster_rcnn_ringmoe_fpn.py', './_base_/dior.py', './_base_/schedule_demo.py',
          './_base_/default_runtime.py']

model = dict(
    backbone=dict(_delete_=True, type='ConvertedBackbone', out_indices=(0, 1, 2, 3), frozen_stages=1),
    neck=dict(in_channels=[256, 512, 1024, 2048]),  # run.py sets these from the backbone's widths
    roi_head=dict(bbox_head=dict(num_classes=20)))
