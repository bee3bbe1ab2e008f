"""Base models: loading a local HF folder (:mod:`.loading`) and the built-in ChatGLM-6B port
(:mod:`.chatglm`)."""
