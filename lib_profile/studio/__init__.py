"""The studio: poses, tones, and (next) the plan of stages that turns a face LoRA into portraits."""
