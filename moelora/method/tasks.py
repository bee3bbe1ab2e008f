"""Task names and ids.

The paper's eight PromptCBLUE tasks, in the fixed order that defines the dense task ids
0..7 (docs/methods.md §1.1, ``task_ids: dense``). The ordered list actually used by a run comes
from ``conf/data/*.yaml`` (``data.tasks``) and is saved with every adapter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

PAPER_TASKS: tuple[str, ...] = (
    "CMeIE",
    "CHIP-CDN",
    "CHIP-CDEE",
    "CHIP-MDCFNPC",
    "CHIP-CTC",
    "KUAKE-QIC",
    "IMCS-V2-MRG",
    "MedDG",
)

# Each PromptCBLUE v0.1 task's ``task_type`` (the coarse type every line carries; the scorer
# never reads it, but a line whose type does not fit its task_dataset is a mislabelled line).
TASK_TYPES: dict[str, str] = {
    "CMeIE": "spo_generation",
    "CHIP-CDN": "normalization",
    "CHIP-CDEE": "event_extraction",
    "CHIP-MDCFNPC": "attr_cls",
    "CHIP-CTC": "cls",
    "KUAKE-QIC": "cls",
    "IMCS-V2-MRG": "report_generation",
    "MedDG": "response_generation",
    "CMeEE-V2": "ner",
    "IMCS-V2-NER": "ner",
    "IMCS-V2-SR": "attr_cls",
    "IMCS-V2-DAC": "cls",
    "CHIP-STS": "cls",
    "KUAKE-QTR": "matching",
    "KUAKE-QQR": "matching",
    "KUAKE-IR": "matching",
}

# The authors' 1-based ids over all 16 PromptCBLUE v0.1 tasks (MOELoRA-peft
# data/task_dataset.json, ``str2id``); their embedding table has 17 rows, row 0 unused.
AUTHORS_TASK_IDS: dict[str, int] = {
    "CHIP-CDEE": 1,
    "CMeEE-V2": 2,
    "CHIP-CTC": 3,
    "IMCS-V2-DAC": 4,
    "CHIP-STS": 5,
    "IMCS-V2-MRG": 6,
    "MedDG": 7,
    "CHIP-CDN": 8,
    "IMCS-V2-NER": 9,
    "CHIP-MDCFNPC": 10,
    "KUAKE-QTR": 11,
    "KUAKE-QIC": 12,
    "CMeIE": 13,
    "IMCS-V2-SR": 14,
    "KUAKE-QQR": 15,
    "KUAKE-IR": 16,
}


MAX_TASK_NAME = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_task_name(task: object) -> str:
    """A task name, refused unless it is safe as a folder name: task names name adapters'
    folders (``adapters/<task>``) and files, so a name may not hold a path separator, be
    ``.``/``..`` or start with ``.``, hold control characters, or be longer than
    ``MAX_TASK_NAME`` characters.

    Raises:
        ValueError: naming the task, what is wrong and the fix.
    """
    if not isinstance(task, str) or not task.strip():
        problem = "is empty" if isinstance(task, str) else f"is a {type(task).__name__}"
    elif "/" in task or "\\" in task:
        problem = "contains a path separator"
    elif task.startswith("."):
        problem = "starts with '.' ('..' would leave the run folder)"
    elif _CONTROL.search(task):
        problem = "contains a control character"
    elif len(task) > MAX_TASK_NAME:
        problem = f"is {len(task)} characters long (at most {MAX_TASK_NAME})"
    elif task != task.strip():
        problem = "starts or ends with whitespace"
    else:
        return task
    raise ValueError(
        f"task name {task!r} {problem}; task names become folder names, so use letters, "
        "digits, '-' and '_' (rename it in data.tasks and in the data's task_dataset)"
    )


class TaskMap:
    """Maps task names to integer task ids and back.

    Args:
        tasks: the ordered task list (``data.tasks``).
        scheme: ``dense`` (ids 0..T-1 in list order, table of T rows) or ``authors``
            (MOELoRA-peft's 1..16 ids, table of 17 rows).
    """

    def __init__(self, tasks: Sequence[str], scheme: str = "dense") -> None:
        tasks = [check_task_name(t) for t in tasks]
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"data.tasks has duplicates: {tasks}")
        if not tasks:
            raise ValueError("data.tasks is empty; list at least one task")
        self.tasks = tasks
        self.scheme = scheme
        if scheme == "dense":
            self._ids = {t: i for i, t in enumerate(tasks)}
            self.num_embeddings = len(tasks)
        elif scheme == "authors":
            unknown = [t for t in tasks if t not in AUTHORS_TASK_IDS]
            if unknown:
                raise ValueError(f"task_ids=authors has no id for {unknown}; use task_ids=dense")
            self._ids = {t: AUTHORS_TASK_IDS[t] for t in tasks}
            self.num_embeddings = max(AUTHORS_TASK_IDS.values()) + 1
        else:
            raise ValueError(f"unknown task id scheme {scheme!r}; use 'dense' or 'authors'")
        self._names = {i: t for t, i in self._ids.items()}

    def __len__(self) -> int:
        return len(self.tasks)

    def __contains__(self, task: str) -> bool:
        return task in self._ids

    def id(self, task: str) -> int:
        try:
            return self._ids[task]
        except KeyError:
            raise KeyError(
                f"unknown task {task!r}; this run's tasks are {self.tasks} (data.tasks)"
            ) from None

    def name(self, task_id: int) -> str:
        try:
            return self._names[int(task_id)]
        except KeyError:
            raise KeyError(
                f"unknown task id {task_id}; valid ids are {sorted(self._names)}"
            ) from None

    def ids(self) -> list[int]:
        return [self._ids[t] for t in self.tasks]

    def to_dict(self) -> dict:
        return {"tasks": self.tasks, "scheme": self.scheme, "ids": self._ids}
