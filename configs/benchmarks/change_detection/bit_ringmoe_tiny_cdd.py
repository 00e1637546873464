# BIT on a RingMoE backbone, CDD (seasonal changes, 256 px JPEG pairs). Without --data-root
# the task generates a CDD demo (benchmarks/datasets/change_detection.py) beside the default
# LEVIR-CD one.
_base_ = ['./_base_/cdd.py', './_base_/bit_ringmoe.py', './_base_/schedule_demo.py',
          './_base_/default_runtime.py']

primary_metric = 'change/F1'
protocol = 'finetune'
