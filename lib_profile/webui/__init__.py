"""The glue between Profile Studio and the WebUI; imports ``modules`` only inside functions."""
