# BinsFormer on a RingMoE backbone, ISPRS Vaihingen nDSM height (IRRG, optical), CPU demo size.
#
# The backbone's architecture and the data_preprocessor's mean/std are filled by
# benchmarks/run.py from the converted checkpoint's meta, and the head's in_channels from the
# backbone's widths; run.py also fills init_cfg.checkpoint from --checkpoint ('none' trains the
# same model from random weights). Primary metric: rmse in metres, lower is better.
_base_ = ['./_base_/binsformer_ringmoe.py', './_base_/vaihingen_ndsm.py', './_base_/schedule_demo.py',
          './_base_/default_runtime.py']
protocol = 'finetune'
