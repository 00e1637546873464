# Full finetune of a converted single-model backbone (gMLP, Multigrain, BiT, DINO, mindcv) on
# NWPU-RESISC45: AdamW, warm-up then cosine, every parameter trains (no layer-wise decay: the
# families have no common notion of depth).
_base_ = ['./_base_/nwpu_resisc45.py', './_base_/converted_cls.py', './_base_/schedule_finetune_demo.py',
          './_base_/default_runtime.py']
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
                     clip_grad=dict(max_norm=5.0))
model = dict(head=dict(num_classes=45))

protocol = 'finetune'
