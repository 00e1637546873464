# Faster R-CNN + FPN on a RingMoE backbone (optical modality), DIOR horizontal boxes: the
# detection task's default config. Metrics: pascal_voc/AP50 (mAP50, primary) and pascal_voc/mAP
# (IoU 0.50:0.95) from mmdet's VOCMetric; see _base_/dior.py.
#   python benchmarks/run.py --task detection --checkpoint ringmoe_tiny.pth [--data-root data/DIOR]
_base_ = ['./_base_/faster_rcnn_ringmoe_fpn.py', './_base_/dior.py', './_base_/schedule_demo.py',
          './_base_/default_runtime.py']

model = dict(
    backbone=dict(modality='optical'),  # DIOR is RGB imagery from Google Earth
    roi_head=dict(bbox_head=dict(num_classes=20)))
