"""Training: the head loop on frozen features, the fine-tuning Trainer, and
``photocritic train``'s orchestration (:mod:`photocritic.training.run`)."""
