# Base RingMoE (embed 128, depths 2-2-18-2, heads 4-8-16-32): 1.2B parameters with MoE.
_base_ = "_base_simmim.py"
model = dict(arch="base")
data = dict(batch_size=16)
optim = dict(lr=1e-4, min_lr=1e-6, warmup_steps=2000)
train = dict(steps=200000, log_interval=50, save_interval=5000, routing_interval=5000, device="Ascend", mode="graph")
