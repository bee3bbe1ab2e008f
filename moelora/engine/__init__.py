"""The training engine shared by every method: the loop (:mod:`.train`), checkpoints
(:mod:`.checkpoint`), adapter files (:mod:`.adapters`), batched generation
(:mod:`.generation`) and multi-process launches through accelerate (:mod:`.distributed`)."""
