# BinsFormer on a RingMoE backbone, ISPRS Potsdam nDSM height (RGB, optical), CPU demo size.
# See binsformer_ringmoe_tiny_vaihingen.py; heights here are 16-bit PNGs in centimetres.
_base_ = ['./_base_/binsformer_ringmoe.py', './_base_/potsdam_ndsm.py', './_base_/schedule_demo.py',
          './_base_/default_runtime.py']
protocol = 'finetune'
