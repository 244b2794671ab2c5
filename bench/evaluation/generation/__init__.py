"""Generation backends behind one interface (`base.get_generator`): `hf` (transformers,
batched) and `vllm` (imported only when asked for)."""
