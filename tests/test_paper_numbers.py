"""analysis/paper_numbers.py holds every number of the paper's reported results, star for star.

The reference is ``../shared/spec/paper_results.md``, the transcription source: these tests
read it to check the transcription (every value and every ``*`` of Tables 1-3, and the values
the text gives for Figs. 4-6 and the sparse gate) and skip when ``../shared`` is absent.
"""

from __future__ import annotations

import re

import pytest

from analysis import paper_numbers as pn

COLUMNS = (
    "CMeIE",
    "CHIP-CDN",
    "CHIP-CDEE",
    "CHIP-MDCFNPC",
    "CHIP-CTC",
    "KUAKE-QIC",
    "IMCS-V2-MRG",
    "MedDG",
    "avg",
)
TABLE2_ROWS = {
    "ChatGPT": "chatgpt",
    "Huatuo": "huatuo",
    "P-Tuning": "ptuning",
    "LoRA (Full)": "lora_full",
    "LoRA (Single)": "lora_single",
    "LoRA (Full+TP)": "lora_full_tp",
    "Task-Arithmetic": "task_arithmetic",
    "LoRAHub": "lorahub",
    "MoLoRA": "molora",
    "MOELoRA (D)": "moelora_dense",
    "MOELoRA (S)": "moelora_sparse",
}
TABLE3_ROWS = {
    "w/o MOE (= LoRA (Full))": "lora_full",
    "w/o gate": "moelora_no_gate",
    "w multiple gate": "moelora_multi_gate",
    "w BT": "moelora_bt",
    "w RBT": "moelora_rbt",
    "LoRA (Full)-QKV": "lora_full_qkv",
    "MOELoRA (D)-QKV": "moelora_dense_qkv",
    "MOELoRA (D)": "moelora_dense",
}


@pytest.fixture(scope="module")
def spec(shared_dir) -> str:
    return (shared_dir / "spec" / "paper_results.md").read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def table_rows(block: str) -> dict[str, list[str]]:
    """Markdown table body: first cell → the other cells (header and rule lines dropped)."""
    rows = {}
    for line in block.splitlines():
        if not line.startswith("| ") or set(line) <= set("|- "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in ("row", "task"):
            continue
        rows[cells[0]] = cells[1:]
    return rows


def values_and_stars(cells: list[str]) -> tuple[dict[str, float], set[str]]:
    values, stars = {}, set()
    for column, cell in zip(COLUMNS, cells, strict=True):
        values[column] = float(cell.rstrip("*"))
        if cell.endswith("*"):
            stars.add(column)
    return values, stars


@pytest.mark.parametrize(
    "heading, mapping, table, significant",
    [
        ("Table 2", TABLE2_ROWS, pn.TABLE2, pn.TABLE2_SIGNIFICANT),
        ("Table 3", TABLE3_ROWS, pn.TABLE3, pn.TABLE3_SIGNIFICANT),
    ],
)
def test_every_table_value_and_star(spec, heading, mapping, table, significant):
    rows = table_rows(section(spec, heading))
    assert set(rows) == set(mapping), f"{heading}: rows in the spec vs the test's mapping"
    assert set(table) == set(mapping.values())
    stars_seen = set()
    for name, cells in rows.items():
        key = mapping[name]
        values, stars = values_and_stars(cells)
        assert table[key] == values, f"{heading}, {name}"
        stars_seen |= {(key, c) for c in stars}
    assert stars_seen == set(significant), heading


def test_table1_counts(spec):
    rows = table_rows(section(spec, "Table 1"))
    parsed = {
        task: tuple(int(c.replace(",", "")) for c in cells[1:]) for task, cells in rows.items()
    }
    assert parsed == pn.TABLE1


def test_figure_and_text_values(spec):
    text = section(spec, "Figures 4–6")
    header = spec.split("## Table 1")[0]
    assert (
        tuple(int(s) for s in re.search(r"seeds\s+(\d+), (\d+), (\d+)", header).groups())
        == pn.SEEDS
    )
    n4 = float(re.search(r"about ([\d.]+) at N = 4\s+\(approximate", text).group(1))
    assert pn.FIG4[(16, 4)] == n4 and (16, 4) in pn.FIG4_APPROXIMATE
    assert pn.FIG4[(16, 8)] == pn.TABLE2["moelora_dense"]["avg"]
    assert float(re.search(r"no more than ([\d.]+) %", text).group(1)) == pn.FIG5_MAX_RATIO_PERCENT
    assert all(
        v <= pn.FIG5_MAX_RATIO_PERCENT
        for k, v in pn.FIG5_RATIO_PERCENT_CHATGLM6B.items()
        if k in ("lora_full", "moelora_dense")
    )
    low, high, best = map(
        int, re.search(r"K searched from (\d+) to (\d+); K = (\d+) is best", text).groups()
    )
    assert (pn.SPARSE_K_SEARCHED, pn.SPARSE_BEST_K) == (tuple(range(low, high + 1)), best)
    similar = re.search(
        r"(\S+) and (\S+) have largely\s+similar weights except on experts "
        r"(\d+) and (\d+)",
        text,
    ).groups()
    assert pn.FIG6_SIMILAR_TASKS == similar[:2]
    assert pn.FIG6_DIFFERING_EXPERTS == tuple(int(e) for e in similar[2:])


def test_no_row_left_untranscribed():
    for table in (pn.TABLE2, pn.TABLE3):
        for key, row in table.items():
            assert tuple(row) == pn.TASK_COLUMNS and all(
                isinstance(v, float) for v in row.values()
            ), key
