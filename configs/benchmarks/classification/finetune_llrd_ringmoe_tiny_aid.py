# Full finetune of a RingMoE backbone on AID with layer-wise lr decay (0.75 per block).
# Train ratio 20% (default) or 50%: --cfg-options train_ratio=0.5.
_base_ = ['./_base_/aid.py', './_base_/ringmoe_cls.py', './_base_/schedule_finetune_demo.py',
          './_base_/default_runtime.py']
model = dict(
    backbone=dict(drop_path_rate=0.1),
    head=dict(num_classes=30))

protocol = 'finetune_llrd'  # the results' protocol column: full finetune, layer-wise lr decay
