# Faster R-CNN + FPN on a RingMoE backbone, HRSID SAR ship detection (one class). Metrics:
# coco/bbox_mAP (primary) and coco/bbox_mAP_50 from mmdet's CocoMetric; see _base_/hrsid.py.
#   python benchmarks/run.py --task detection --config configs/benchmarks/detection/faster_rcnn_ringmoe_tiny_hrsid.py \
#       --checkpoint ringmoe_tiny.pth [--data-root data/HRSID_JPG]
#
# Modality: HRSID tiles are 8-bit SAR *amplitude* images (Sentinel-1B, TerraSAR-X, TanDEM-X,
# already detected and quantised), stored as JPEG with the single band copied to 3 channels.
# That is RingMoE's 'sar_l2' modality (pretrain/models/arch.py: 3 channels "I, I, I", one
# intensity band replicated), not 'sar_l1' (8 channels of complex I/Q per polarisation, which
# needs single-look complex data that HRSID does not ship). So the backbone uses the sar_l2
# patch embedding and experts, and run.py takes sar_l2's mean/std from the checkpoint meta.
_base_ = ['./_base_/faster_rcnn_ringmoe_fpn.py', './_base_/hrsid.py', './_base_/schedule_demo.py',
          './_base_/default_runtime.py']

model = dict(
    data_preprocessor=dict(bgr_to_rgb=False),  # the three channels are the same band
    backbone=dict(modality='sar_l2'),
    roi_head=dict(bbox_head=dict(num_classes=1)))
