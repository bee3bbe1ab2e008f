"""The run harness: one job from config to ``results.json`` (:mod:`.runner`), what a pipeline
gets (:mod:`.context`), job identity and reuse (:mod:`.identity`, :mod:`.reuse`), results and
loggers, config checks (:mod:`.schema`), run-folder names (:mod:`.naming`), inputs
(:mod:`.inputs`), the lr protocol and Hydra callbacks."""
