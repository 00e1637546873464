# The released layout (ringmoe.md): embed 448, depths 2-2-18-2, heads 14-28-56-112, window 12.
# 14.75B parameters; the authors trained it on 256 Ascend 910B cards (issue: distributed launch).
_base_ = "_base_simmim.py"
model = dict(arch="giant")
data = dict(batch_size=8)
optim = dict(lr=1e-4, min_lr=1e-6, warmup_steps=10000)
train = dict(steps=400000, log_interval=50, save_interval=5000, routing_interval=5000, device="Ascend", mode="graph")
