# Linear probe of a converted single-model backbone (gMLP, Multigrain, BiT, DINO, mindcv) on
# NWPU-RESISC45: the backbone and its pooling stay frozen (FreezeBackboneHook), the head trains.
#   python benchmarks/run.py --task classification --config configs/benchmarks/classification/linear_converted_nwpu.py \
#       --checkpoint gmlp_ti.pth
_base_ = ['./_base_/nwpu_resisc45.py', './_base_/converted_cls.py', './_base_/schedule_linear_demo.py',
          './_base_/default_runtime.py']
custom_imports = dict(imports=['benchmarks.models.registry', 'benchmarks.engine.frozen'], allow_failed_imports=False)
custom_hooks = [dict(type='FreezeBackboneHook')]
model = dict(head=dict(num_classes=45))

protocol = 'linear_probe'  # the results' protocol column
