# The plain regression baseline (same backbone and pixel decoder as BinsFormer, a 1-channel output)
# on ISPRS Vaihingen nDSM height; compare its rmse with binsformer_ringmoe_tiny_vaihingen.py.
_base_ = ['./_base_/regression_ringmoe.py', './_base_/vaihingen_ndsm.py', './_base_/schedule_demo.py',
          './_base_/default_runtime.py']
protocol = 'finetune'
