"""Prompts as the WebUI reads them, host-neutral: used by the core (Explain, Prompt-to-Prompt, training captions)
and by both hosts, so they live outside ``hosts/``.

* :mod:`.parse` - emphasis weights, extra-network tags (``<lora:NAME:W>``), 75-token chunks, encoding;
* :mod:`.schedule` - prompt editing ``[a:b:when]`` and alternation ``[a|b]``;
* :mod:`.tokenizer` - our own CLIP tokenizer (no download).
"""
