# Linear probe of a RingMoE backbone on NWPU-RESISC45: the whole backbone is frozen (frozen_stages=3:
# patch embedding, all four stages and the final norm), only the linear head trains.
# Train ratio 10% (default) or 20%: --cfg-options train_ratio=0.2.
_base_ = ['./_base_/nwpu_resisc45.py', './_base_/ringmoe_cls.py', './_base_/schedule_linear_demo.py',
          './_base_/default_runtime.py']
model = dict(
    backbone=dict(frozen_stages=3, drop_path_rate=0.0),
    head=dict(num_classes=45))

protocol = 'linear_probe'  # the results' protocol column
