"""How the served model reads requests and turns replies into code (the model file itself is
loaded through MLflow with a real tiny model in test_registry_log_model.py)."""

from __future__ import annotations

import pytest

from laimark_pl.registry.pyfunc_model import (
    ModelInputError,
    _as_items,
    entry_point_of,
    generation_settings,
    parse_request,
)

SIGNATURE = 'import math\n\n\ndef helper(x):\n    return x\n\n\ndef area(r):\n    """Area of a circle."""\n'


def test_signature_prompt_asks_for_the_function_and_returns_a_whole_program():
    request = parse_request(SIGNATURE, 0, system_prompt="be careful", answer_mode="full")
    assert request.entry_point == "area" and request.system_prompt == "be careful"
    assert "Write a complete Python function" in request.user_message and "def area(r):" in request.user_message
    full = "Here you go:\n```python\ndef area(r):\n    return math.pi * r * r\n```\nDone."
    code = request.code_from(full)
    assert code.startswith("import math") and "return math.pi * r * r" in code and "Done" not in code
    compile(code, "<answer>", "exec")


def test_body_mode_keeps_the_body_indentation():
    request = parse_request(SIGNATURE, 0, system_prompt=None, answer_mode="body")
    assert "function body only" in request.user_message
    code = request.code_from("    return math.pi * r ** 2\n")
    assert code.endswith('"""Area of a circle."""\n    return math.pi * r ** 2\n')
    compile(code, "<answer>", "exec")


def test_free_text_request_returns_the_first_code_block_or_the_reply():
    request = parse_request("Write a function that reverses a string.", 0, system_prompt=None, answer_mode="full")
    assert request.entry_point is None and request.user_message.startswith("Write a function")
    assert request.code_from("<think>hmm</think>```python\ndef rev(s):\n    return s[::-1]\n```\n```py\nx\n```") == (
        "def rev(s):\n    return s[::-1]\n")
    assert request.code_from("  def rev(s): return s[::-1]  ") == "def rev(s): return s[::-1]"


def test_chat_messages_in_both_shapes():
    messages = [{"role": "system", "content": "terse"}, {"role": "user", "content": "reverse a string"}]
    for item in (messages, {"messages": messages}):
        request = parse_request(item, 3, system_prompt="default", answer_mode="full")
        assert (request.user_message, request.system_prompt) == ("reverse a string", "terse")
    request = parse_request([{"role": "user", "content": "hi"}], 0, system_prompt="default", answer_mode="full")
    assert request.system_prompt == "default"
    assert parse_request({"prompt": SIGNATURE}, 0, system_prompt=None, answer_mode="full").entry_point == "area"


@pytest.mark.parametrize(("item", "message"), [
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "input 1, message 1: role 'assistant'"),
    ([{"role": "system", "content": "s"}], "exactly one 'user' message, got 0"),
    ([{"role": "user"}], "input 1, message 0"),
    ({"text": "x"}, "must have 'messages' or 'prompt'"),
    ("   ", "input 1: empty prompt"),
    (42, "expected a prompt string or chat messages, got int"),
])
def test_bad_inputs_are_named(item, message):
    with pytest.raises(ModelInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_request(item, 1, system_prompt=None, answer_mode="full")


def test_entry_point_is_the_last_top_level_def():
    assert entry_point_of(SIGNATURE) == "area"
    assert entry_point_of("no function here") is None
    assert entry_point_of("async def fetch(url):\n    ...") == "fetch"


def test_generation_settings_take_request_params_over_model_defaults():
    defaults = {"max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0, "system_prompt": "ignored"}
    assert generation_settings(defaults, None) == {"max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0,
                                                   "seed": None}
    assert generation_settings(defaults, {"temperature": 0.7, "seed": 3, "max_new_tokens": None}) == {
        "max_new_tokens": 64, "temperature": 0.7, "top_p": 1.0, "seed": 3}
    with pytest.raises(ModelInputError, match="max_new_tokens"):
        generation_settings(defaults, {"max_new_tokens": 0})
    with pytest.raises(ModelInputError, match="temperature"):
        generation_settings(defaults, {"temperature": -1.0})


def test_dataframe_inputs_are_read_row_by_row():
    import pandas as pd

    assert _as_items(pd.DataFrame({"prompt": ["a", "b"]})) == ["a", "b"]
    assert _as_items(pd.DataFrame({0: ["a"]})) == ["a"]
    frame = pd.DataFrame({"messages": [[{"role": "user", "content": "x"}]]})
    assert _as_items(frame) == [{"messages": [{"role": "user", "content": "x"}]}]
    assert _as_items("single") == ["single"]
