"""The joint multi-task pipeline, shared by LoRA (Full), MOELoRA and most baselines.

Load the frozen base → build the method's adapter → train on the mixture of all tasks
(the method's sampler decides the batches) → save the adapter → generate the test split.
Methods that need another pipeline (one adapter per task, composition of existing
adapters, no training) name their own function in their YAML.
"""

from __future__ import annotations

from moelora.context import PipelineOutput, RunContext


def joint(ctx: RunContext) -> PipelineOutput:
    model, tokenizer = ctx.load_base()
    model = ctx.build_adapter(model)
    encoder = ctx.encoder(tokenizer)
    trained = ctx.train(model, encoder, ctx.splits["train"])
    ctx.save_adapter(model, ctx.run_dir / "adapter")
    generation = ctx.generate(model, encoder, ctx.splits["test"])
    return PipelineOutput(predictions=generation.predictions, model=model, train=trained,
                          generation=generation)
