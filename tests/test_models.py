import pytest

from bench.errors import ModelNotFoundError, NetworkRequiredError
from trainers.models import load_model, load_tokenizer, resolve_model


def test_char_tokenizer_round_trips_text(char_tokenizer):
    text = "Q: 12 + 7 * 3 = ?\nA: 7 * 3 = 21; 12 + 21 = 33. Answer: 33"
    ids = char_tokenizer(text).input_ids
    assert len(ids) == len(text)
    assert char_tokenizer.decode(ids) == text


def test_tiny_model_round_trips_through_save_and_load(tiny_model_dir):
    assert (tiny_model_dir / "model.safetensors").exists()
    model = load_model(str(tiny_model_dir), trust_remote_code=False)
    tok = load_tokenizer(str(tiny_model_dir), trust_remote_code=False)
    assert model.config.vocab_size == len(tok)
    assert tok.eos_token_id is not None and tok.pad_token_id is not None


def test_missing_model_path_is_one_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError, match="config.json"):
        resolve_model(str(tmp_path))


def test_hub_id_without_network_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NetworkRequiredError, match="no network"):
        resolve_model("some-org/some-model-that-is-not-cached")
