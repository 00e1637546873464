# Tiny RingMoE (embed 32, depths 2-2-2-2): runs the same code as giant, in minutes on a CPU.
_base_ = "_base_simmim.py"
model = dict(arch="tiny")
