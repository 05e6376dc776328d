"""Logging a real tiny LoRA adapter as an MLflow "model from code" and loading it back."""

from __future__ import annotations

import mlflow
import pytest
import yaml
from registry_helpers import make_tiny_adapter, sqlite_uri

from laimark_pl.modules.policy import PolicyConfig, load_policy
from laimark_pl.registry.log_model import (
    AdapterDirError,
    ModelConfig,
    check_adapter_dir,
    log_adapter_model,
    pip_requirements,
)
from laimark_pl.registry.pyfunc_model import parse_request
from laimark_pl.registry.tracking import attached_run, ensure_experiment

SIGNATURE = 'def add(a, b):\n    """Return a + b."""\n'


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return make_tiny_adapter(tmp_path_factory.mktemp("adapter") / "adapter", seed=1)


def _log(tmp_path, adapter, config: ModelConfig):
    uri = sqlite_uri(tmp_path)
    client = mlflow.MlflowClient(uri)
    run_id = client.create_run(ensure_experiment("log", uri)).info.run_id
    with attached_run(run_id, uri):
        info = log_adapter_model(adapter, config)
    return uri, info


def test_logged_model_loads_and_answers_with_the_adapters_generations(tmp_path, adapter):
    config = ModelConfig(base_model="tiny", system_prompt="Be exact.", max_new_tokens=12)
    uri, info = _log(tmp_path, adapter, config)
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(info.model_uri)
    params = {"temperature": 1.0, "seed": 7, "max_new_tokens": 10}
    chat = [{"role": "user", "content": "Reverse a string."}]
    out = model.predict([SIGNATURE, chat], params=params)

    # The same generations straight from the policy (base + the same adapter, one batch), read the same way.
    policy = load_policy(PolicyConfig(model="tiny", adapter=str(adapter), trainable=False))
    requests = [parse_request(item, 0, system_prompt="Be exact.", answer_mode="full") for item in (SIGNATURE, chat)]
    replies = policy.generate_text([r.user_message for r in requests], system_prompt="Be exact.", temperature=1.0,
                                   seed=7, max_new_tokens=10)
    assert out == [r.code_from(reply[0]) for r, reply in zip(requests, replies, strict=True)]
    assert out[0].startswith(SIGNATURE.rstrip("\n"))  # a whole program around the generated body
    assert model.predict([SIGNATURE, chat], params=params) == out  # seeded sampling is reproducible
    assert len(model.predict([SIGNATURE, SIGNATURE], params={"max_new_tokens": 3})) == 2


def test_model_files_signature_config_and_code(tmp_path, adapter):
    config = ModelConfig(base_model="tiny", answer_mode="body", max_new_tokens=33, temperature=0.2,
                         policy={"dtype": "float32"})
    uri, info = _log(tmp_path, adapter, config)
    mlflow.set_tracking_uri(uri)
    local = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "dl"))
    mlmodel = yaml.safe_load(open(f"{local}/MLmodel"))
    pyfunc = mlmodel["flavors"]["python_function"]
    assert pyfunc["config"] == config.to_dict()
    assert set(pyfunc["artifacts"]) == {"adapter"}
    signature = mlflow.models.get_model_info(info.model_uri).signature
    params = {p.name: p.default for p in signature.params}
    assert params == {"max_new_tokens": 33, "temperature": 0.2, "top_p": 1.0, "seed": None}
    from pathlib import Path

    code = Path(local) / "code" / "laimark_pl"
    assert (code / "registry" / "pyfunc_model.py").is_file() and not list(code.rglob("__pycache__"))
    assert (Path(local) / "artifacts" / "adapter" / "adapter_config.json").is_file()
    requirements = (Path(local) / "requirements.txt").read_text().split()
    assert any(r.startswith("torch==") for r in requirements) and any(r.startswith("peft==") for r in requirements)
    assert requirements == pip_requirements()


def test_a_base_model_that_cannot_be_loaded_is_named(tmp_path, adapter):
    missing = str(tmp_path / "no-such-model")
    uri, info = _log(tmp_path, adapter, ModelConfig(base_model=missing))
    mlflow.set_tracking_uri(uri)
    with pytest.raises(mlflow.exceptions.MlflowException, match="cannot load base model") as err:
        mlflow.pyfunc.load_model(info.model_uri)
    assert missing in str(err.value)


def test_adapter_dir_must_hold_a_peft_adapter(tmp_path, adapter):
    with pytest.raises(AdapterDirError, match="not found"):
        check_adapter_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterDirError, match="no adapter_config.json"):
        check_adapter_dir(tmp_path / "empty")
    assert check_adapter_dir(adapter) == adapter


def test_model_config_validation_and_policy_settings():
    with pytest.raises(ValueError, match="answer_mode"):
        ModelConfig(base_model="tiny", answer_mode="diff")
    with pytest.raises(ValueError, match="base_model"):
        ModelConfig(base_model="")
    config = ModelConfig.from_policy(PolicyConfig(model="Qwen/Qwen3-8B", dtype="bfloat16", load_in_4bit=True,
                                                  lora_r=8), system_prompt="s")
    assert config.base_model == "Qwen/Qwen3-8B" and config.system_prompt == "s"
    assert config.policy["dtype"] == "bfloat16" and config.policy["load_in_4bit"] is True
    assert "lora_r" not in config.policy and "adapter" not in config.policy
