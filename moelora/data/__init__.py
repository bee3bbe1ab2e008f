"""Data: PromptCBLUE records to token tensors (:mod:`.encoding`), batch samplers
(:mod:`.samplers`), the public PromptCBLUE release turned into the paper's split
(:mod:`.promptcblue`) and the embedded MedSynth-8 benchmark (:mod:`.medsynth`)."""
