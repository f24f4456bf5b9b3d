"""The face LoRA trainer: runs in its own process (``python -m lib_profile train``)."""
