# BIT on a RingMoE backbone, LEVIR-CD (optical), sized for a CPU demo.
#
# The backbone's architecture and the data_preprocessor's mean/std come from the converted
# checkpoint's meta (benchmarks/run.py); the task's fit_heads repeats the modality's 3 mean/std
# values for the second date and sizes the fusion neck to the backbone's stage widths.
_base_ = ['./_base_/levir_cd.py', './_base_/bit_ringmoe.py', './_base_/schedule_demo.py',
          './_base_/default_runtime.py']

primary_metric = 'change/F1'
protocol = 'finetune'
