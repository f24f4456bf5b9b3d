"""The Profile Studio tab (gradio); gradio is imported only inside functions."""
