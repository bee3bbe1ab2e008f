"""Using a finished run: rebuild it (:mod:`.load`), answer records with it (:mod:`.predict`),
export its tasks as PEFT LoRA adapters (:mod:`.export`)."""
