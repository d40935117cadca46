"""Training with Lightning: the LightningModule, its fast path, the budget, callbacks, checkpoints, preemption."""
