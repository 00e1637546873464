# Full finetune of a RingMoE backbone on NWPU-RESISC45 with layer-wise lr decay (0.75 per block).
# Train ratio 10% (default) or 20%: --cfg-options train_ratio=0.2.
_base_ = ['./_base_/nwpu_resisc45.py', './_base_/ringmoe_cls.py', './_base_/schedule_finetune_demo.py',
          './_base_/default_runtime.py']
model = dict(
    backbone=dict(drop_path_rate=0.1),
    head=dict(num_classes=45))

protocol = 'finetune_llrd'  # the results' protocol column: full finetune, layer-wise lr decay
