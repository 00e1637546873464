# Tiny RingMoE, data parallel over 2 processes: runs on CPU under msrun (MindSpore's own
# collective library), e.g.
#   python -m pretrain.launch.msrun --nproc 2 -- pretrain/train.py --config configs/pretrain/tiny_dp2.py
_base_ = "tiny.py"
parallel = dict(mode='data_parallel', data_parallel=2)
