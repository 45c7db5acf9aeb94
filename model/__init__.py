"""Qt-free MolmoAct runtime: config, vision tower, LLM with an explicit KV cache, checkpoints, processor."""
