"""The paper's reported numbers, in one place (Tables 1-3, Figs. 4 and 5).

Transcribed from Liu et al., SIGIR'24, Tables 1-3 and Sections 4.1-4.6. Scores are on the
paper's PromptCBLUE test split (the public dev set, de-duplicated), ChatGLM-6B, averaged over
seeds 42, 43 and 44, in [0, 1]. They are PromptCBLUE numbers: tables print them beside the
measured rows labelled with their benchmark, never as if they were measured here. A ``*``
in the paper (a significant improvement over the best baseline, two-sided t-test, p < 0.05)
is kept in ``TABLE2_SIGNIFICANT`` / ``TABLE3_SIGNIFICANT``.
"""

from __future__ import annotations

TASK_COLUMNS: tuple[str, ...] = (
    "CMeIE", "CHIP-CDN", "CHIP-CDEE", "CHIP-MDCFNPC", "CHIP-CTC", "KUAKE-QIC", "IMCS-V2-MRG",
    "MedDG", "avg",
)
BENCHMARK = "promptcblue"             # the benchmark every number below was measured on
NOT_TRANSCRIBED = "not transcribed"   # the note shown beside a row whose values are all None

# Table 1: (train, validation, test) examples per task.
TABLE1: dict[str, tuple[int, int, int]] = {
    "CMeIE": (2828, 600, 600), "CHIP-CDN": (2381, 600, 600), "CHIP-CDEE": (1562, 600, 600),
    "CHIP-MDCFNPC": (4935, 600, 600), "CHIP-CTC": (3622, 1100, 1100),
    "KUAKE-QIC": (3279, 660, 660), "IMCS-V2-MRG": (1799, 600, 600), "MedDG": (4964, 600, 600),
}

# Table 2 (main results). Keys are row keys of analysis.tables (method names, or
# "chatgpt"/"huatuo" for the reported-only in-context rows).
TABLE2: dict[str, dict[str, float]] = {
    "chatgpt": {"CMeIE": 0.3058, "CHIP-CDN": 0.6069, "CHIP-CDEE": 0.2838, "CHIP-MDCFNPC": 0.5854, "CHIP-CTC": 0.5253,
        "KUAKE-QIC": 0.4851, "IMCS-V2-MRG": 0.3253, "MedDG": 0.1361, "avg": 0.4067},
    "huatuo": {"CMeIE": 0.1826, "CHIP-CDN": 0.3610, "CHIP-CDEE": 0.1658, "CHIP-MDCFNPC": 0.3487, "CHIP-CTC": 0.1909,
        "KUAKE-QIC": 0.1454, "IMCS-V2-MRG": 0.2401, "MedDG": 0.1308, "avg": 0.2207},
    "ptuning": {"CMeIE": 0.4552, "CHIP-CDN": 0.8687, "CHIP-CDEE": 0.5256, "CHIP-MDCFNPC": 0.7423, "CHIP-CTC": 0.8275,
        "KUAKE-QIC": 0.8377, "IMCS-V2-MRG": 0.3155, "MedDG": 0.0901, "avg": 0.5828},
    "lora_full": {"CMeIE": 0.5089, "CHIP-CDN": 0.8748, "CHIP-CDEE": 0.5464, "CHIP-MDCFNPC": 0.7780, "CHIP-CTC": 0.8758,
        "KUAKE-QIC": 0.8615, "IMCS-V2-MRG": 0.3678, "MedDG": 0.1113, "avg": 0.6155},
    "lora_single": {"CMeIE": 0.4984, "CHIP-CDN": 0.8882, "CHIP-CDEE": 0.5528, "CHIP-MDCFNPC": 0.7765, "CHIP-CTC": 0.8694,
        "KUAKE-QIC": 0.8524, "IMCS-V2-MRG": 0.3583, "MedDG": 0.1143, "avg": 0.6138},
    "lora_full_tp": {"CMeIE": 0.4933, "CHIP-CDN": 0.8814, "CHIP-CDEE": 0.5450, "CHIP-MDCFNPC": 0.7705, "CHIP-CTC": 0.8755,
        "KUAKE-QIC": 0.8664, "IMCS-V2-MRG": 0.3556, "MedDG": 0.1160, "avg": 0.6130},
    "task_arithmetic": {"CMeIE": 0.3928, "CHIP-CDN": 0.7533, "CHIP-CDEE": 0.3216, "CHIP-MDCFNPC": 0.6619, "CHIP-CTC": 0.8091,
        "KUAKE-QIC": 0.6596, "IMCS-V2-MRG": 0.3163, "MedDG": 0.1147, "avg": 0.5037},
    "lorahub": {"CMeIE": 0.4411, "CHIP-CDN": 0.8442, "CHIP-CDEE": 0.5041, "CHIP-MDCFNPC": 0.7177, "CHIP-CTC": 0.8564,
        "KUAKE-QIC": 0.8502, "IMCS-V2-MRG": 0.3061, "MedDG": 0.1192, "avg": 0.5799},
    "molora": {"CMeIE": 0.5081, "CHIP-CDN": 0.8850, "CHIP-CDEE": 0.5656, "CHIP-MDCFNPC": 0.7850, "CHIP-CTC": 0.8749,
        "KUAKE-QIC": 0.8605, "IMCS-V2-MRG": 0.3590, "MedDG": 0.1067, "avg": 0.6181},
    "moelora_dense": {"CMeIE": 0.5193, "CHIP-CDN": 0.8928, "CHIP-CDEE": 0.5697, "CHIP-MDCFNPC": 0.7933, "CHIP-CTC": 0.8691,
        "KUAKE-QIC": 0.8675, "IMCS-V2-MRG": 0.3681, "MedDG": 0.1089, "avg": 0.6236},
    "moelora_sparse": {"CMeIE": 0.5110, "CHIP-CDN": 0.8980, "CHIP-CDEE": 0.5719, "CHIP-MDCFNPC": 0.7872, "CHIP-CTC": 0.8682,
        "KUAKE-QIC": 0.8633, "IMCS-V2-MRG": 0.3558, "MedDG": 0.1080, "avg": 0.6204},
}
TABLE2_SIGNIFICANT: frozenset[tuple[str, str]] = frozenset({
    ("moelora_dense", "CMeIE"),
    ("moelora_dense", "CHIP-CDN"),
    ("moelora_dense", "CHIP-CDEE"),
    ("moelora_dense", "CHIP-MDCFNPC"),
    ("moelora_dense", "avg"),
    ("moelora_sparse", "CMeIE"),
    ("moelora_sparse", "CHIP-CDN"),
    ("moelora_sparse", "CHIP-CDEE"),
    ("moelora_sparse", "CHIP-MDCFNPC"),
    ("moelora_sparse", "avg"),
})

# Table 3 (ablations). "w/o MOE" is LoRA (Full); MOELoRA (D) repeats Table 2's row (Table 3
# prints no star on its CHIP-CDEE cell).
TABLE3: dict[str, dict[str, float]] = {
    "lora_full": {"CMeIE": 0.5089, "CHIP-CDN": 0.8748, "CHIP-CDEE": 0.5464, "CHIP-MDCFNPC": 0.7780, "CHIP-CTC": 0.8758,
        "KUAKE-QIC": 0.8615, "IMCS-V2-MRG": 0.3678, "MedDG": 0.1113, "avg": 0.6155},
    "moelora_no_gate": {"CMeIE": 0.5015, "CHIP-CDN": 0.8840, "CHIP-CDEE": 0.5378, "CHIP-MDCFNPC": 0.7789, "CHIP-CTC": 0.8818,
        "KUAKE-QIC": 0.8699, "IMCS-V2-MRG": 0.3709, "MedDG": 0.1140, "avg": 0.6174},
    "moelora_multi_gate": {"CMeIE": 0.4994, "CHIP-CDN": 0.8840, "CHIP-CDEE": 0.5692, "CHIP-MDCFNPC": 0.7842, "CHIP-CTC": 0.8764,
        "KUAKE-QIC": 0.8675, "IMCS-V2-MRG": 0.3632, "MedDG": 0.1130, "avg": 0.6196},
    "moelora_bt": {"CMeIE": 0.4817, "CHIP-CDN": 0.8806, "CHIP-CDEE": 0.5712, "CHIP-MDCFNPC": 0.7713, "CHIP-CTC": 0.8682,
        "KUAKE-QIC": 0.8643, "IMCS-V2-MRG": 0.3522, "MedDG": 0.1110, "avg": 0.6126},
    "moelora_rbt": {"CMeIE": 0.4769, "CHIP-CDN": 0.8830, "CHIP-CDEE": 0.5600, "CHIP-MDCFNPC": 0.7741, "CHIP-CTC": 0.8636,
        "KUAKE-QIC": 0.8795, "IMCS-V2-MRG": 0.3541, "MedDG": 0.1135, "avg": 0.6131},
    "lora_full_qkv": {"CMeIE": 0.4666, "CHIP-CDN": 0.8605, "CHIP-CDEE": 0.4997, "CHIP-MDCFNPC": 0.7703, "CHIP-CTC": 0.8264,
        "KUAKE-QIC": 0.7161, "IMCS-V2-MRG": 0.3636, "MedDG": 0.1123, "avg": 0.5770},
    "moelora_dense_qkv": {"CMeIE": 0.4897, "CHIP-CDN": 0.8733, "CHIP-CDEE": 0.5227, "CHIP-MDCFNPC": 0.7854, "CHIP-CTC": 0.8213,
        "KUAKE-QIC": 0.7295, "IMCS-V2-MRG": 0.3640, "MedDG": 0.1099, "avg": 0.5869},
    "moelora_dense": {"CMeIE": 0.5193, "CHIP-CDN": 0.8928, "CHIP-CDEE": 0.5697, "CHIP-MDCFNPC": 0.7933, "CHIP-CTC": 0.8691,
        "KUAKE-QIC": 0.8675, "IMCS-V2-MRG": 0.3681, "MedDG": 0.1089, "avg": 0.6236},
}
TABLE3_SIGNIFICANT: frozenset[tuple[str, str]] = frozenset({
    ("moelora_dense", "CMeIE"),
    ("moelora_dense", "CHIP-CDN"),
    ("moelora_dense", "CHIP-MDCFNPC"),
    ("moelora_dense", "avg"),
})

# Fig. 4 reference points, (rank r, num_experts N) → average test score. The text gives no
# values: (16, 8) is Table 2's MOELoRA (D); (16, 4) ≈ 0.619 is read off Fig. 4a (approximate).
# Fig. 4a: the average improves with N up to 8 and declines slightly at N = 16.
# Fig. 4b: the average rises with r (r/N = 2 fixed); r = 16 is the practical choice.
FIG4: dict[tuple[int, int], float] = {(16, 8): 0.6236, (16, 4): 0.619}
FIG4_APPROXIMATE: frozenset[tuple[int, int]] = frozenset({(16, 4)})

# Fig. 5: trainable-parameter ratio (%) on ChatGLM-6B's shapes as computed in methods.md §8
# (an expectation derived from the architecture, used as a check for params_chatglm6b). The
# text: MOELoRA trains no more than 0.48 % of ChatGLM-6B's parameters, like LoRA (Full);
# MOELoRA (M) and MoLoRA need more; all have the same inference latency except MoLoRA.
FIG5_RATIO_PERCENT_CHATGLM6B: dict[str, float] = {
    "lora_full": 0.4756, "moelora_dense": 0.4756, "moelora_multi_gate": 0.4775, "molora": 0.580,
}

# The sparse gate: K searched from 1 to 7; K = 2 is best.
SPARSE_BEST_K = 2


def is_transcribed(row: dict[str, float | None]) -> bool:
    """True when at least one value of a paper row is known."""
    return any(v is not None for v in row.values())
