# The authors' pretraining layout: 32 nodes x 8 Ascend 910B = 256 ranks, data parallel 32 x
# model parallel 8, expert parallel 4 (the 4 experts of each router spread over 4 data-parallel
# ranks), optimizer sharding, one sliced checkpoint per rank. Check it without devices:
#   python -m pretrain.parallel --config configs/pretrain/giant_32x8x4.py
# Launch (rank table): python -m pretrain.launch.rank_table ... then pretrain.launch.hccl_run on each node.
_base_ = "giant.py"
parallel = dict(mode='semi_auto_parallel', data_parallel=32, model_parallel=8, expert_parallel=4,
                optimizer_shard=True, recompute=True, strategy_file='strategy.ckpt')
