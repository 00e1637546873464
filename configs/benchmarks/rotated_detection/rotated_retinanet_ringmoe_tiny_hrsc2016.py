# Rotated RetinaNet (le90) on a RingMoE backbone, HRSC2016 (one class, ship), sized for a CPU demo.
#
# The backbone's architecture and the data_preprocessor's mean/std come from the converted
# checkpoint's meta (benchmarks/run.py); run.py also sets init_cfg.checkpoint from --checkpoint
# and the FPN's in_channels from the backbone's stage widths.
_base_ = ['./_base_/rotated_retinanet_ringmoe.py', './_base_/hrsc2016.py', './_base_/schedule_demo.py',
          './_base_/default_runtime.py']

model = dict(bbox_head=dict(num_classes=1))
