"""Attention control: one host-neutral controller interface, DAAM word maps and Prompt-to-Prompt on top."""
