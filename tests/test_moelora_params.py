"""ChatGLM-6B trainable-parameter counts from shapes alone (docs/methods.md §4.1, §5.3, §6.2, §7,
Fig. 5). Golden values are docs/methods.md's numbers, re-derived by hand in the comments."""

from __future__ import annotations

import pytest

from moelora.method.introspect import chatglm6b_param_counts

# per block, r = 16: 16·(4096+12288) + 16·(4096+4096) + 2·16·(4096+16384) = 1,048,576
LORA_ALL = 28 * 1_048_576  # 29,360,128


def test_lora_and_moelora_counts():
    lora = chatglm6b_param_counts("lora")
    assert lora["trainable"] == LORA_ALL == 29_360_128
    assert lora["base"] == 6_173_286_400
    assert round(100 * lora["ratio"], 4) == 0.4756
    assert chatglm6b_param_counts("moelora")["trainable"] == 29_361_152  # + 8·64 + 8·64
    assert chatglm6b_param_counts("moelora_sparse")["trainable"] == 29_361_152
    assert chatglm6b_param_counts("moelora", num_tasks=17)["trainable"] == 29_361_152 + 576
    assert chatglm6b_param_counts("moelora_no_gate")["trainable"] == LORA_ALL


def test_multi_gate_and_molora_counts():
    m = chatglm6b_param_counts("moelora_multi_gate")
    assert m["trainable"] == LORA_ALL + 112 * (8 * 64 + 8 * 64) == LORA_ALL + 114_688
    assert round(100 * m["ratio"], 4) == 0.4775
    m17 = chatglm6b_param_counts("moelora_multi_gate", num_tasks=17)
    assert m17["trainable"] == LORA_ALL + 179_200
    assert round(100 * m17["ratio"], 4) == 0.4785
    molora = chatglm6b_param_counts("molora")
    assert molora["trainable"] - LORA_ALL == 6_422_528  # 28·(3·4096 + 16384)·8
    assert round(100 * molora["ratio"], 2) == 0.58


def test_qkv_only_and_errors():
    assert chatglm6b_param_counts("lora", target="qkv")["trainable"] == 28 * 16 * (4096 + 12288)
    with pytest.raises(ValueError, match="method='adalora'"):
        chatglm6b_param_counts("adalora")
