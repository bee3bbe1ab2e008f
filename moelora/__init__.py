"""MOELoRA reproduction harness: multi-task PEFT with a task-motivated mixture of LoRA experts."""

__version__ = "0.1.0"
