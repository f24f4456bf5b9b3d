"""LoRA files in the kohya format the WebUI loads: names, reading, and applying them to a model."""
