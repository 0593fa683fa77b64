"""Every differentiable op, its forward and its backward side by side, written with tensor-level ops.

| module | ops |
|---|---|
| pointwise | every registry row (``registry.py``: arithmetic, maths, activations, pointwise losses), clamp, where |
| activation | softmax log_softmax dropout |
| reduction | sum mean sum_dim mean_dim var_dim max_dim |
| linalg | matmul linear |
| norm | layer_norm batch_norm (fused kernels) |
| shape | reshape transpose narrow slice expand unsqueeze squeeze cat |
| loss | mse_loss l1_loss smooth_l1_loss huber_loss binary_cross_entropy(_with_logits) kl_div cross_entropy nll_loss |
"""
