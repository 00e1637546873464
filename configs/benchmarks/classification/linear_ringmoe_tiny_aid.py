# Linear probe of a RingMoE backbone on AID: the whole backbone is frozen (frozen_stages=3:
# patch embedding, all four stages and the final norm), only the linear head trains.
# Train ratio 20% (default) or 50%: --cfg-options train_ratio=0.5.
_base_ = ['./_base_/aid.py', './_base_/ringmoe_cls.py', './_base_/schedule_linear_demo.py',
          './_base_/default_runtime.py']
model = dict(
    backbone=dict(frozen_stages=3, drop_path_rate=0.0),
    head=dict(num_classes=30))

protocol = 'linear_probe'  # the results' protocol column
