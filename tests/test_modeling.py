"""Model loading: decoder/encoder detection, head upcasting, QLoRA (4-bit nf4 on CPU) train, save, reload, merge; a PRM
starting from a trained sequence reward model; transformers' load report replaced by one line."""

import pytest
import torch
from datasets import Dataset

from trl_rewards.inference.sequence_scoring import RewardScorer
from trl_rewards.merge import merge_adapter
from trl_rewards.modeling import (
    HEAD_NAMES,
    is_decoder_model,
    keep_reward_head_fp32,
    load_process_reward_model,
    load_reward_model,
    reward_peft_config,
    upcast_reward_head,
    zero3_init_disabled,
)
from trl_rewards.testing import save_tiny, tiny_bert_reward_model, tiny_llama_reward_model


def test_decoder_detection():
    assert is_decoder_model(tiny_llama_reward_model()[0])
    assert not is_decoder_model(tiny_bert_reward_model()[0])


def test_upcast_reward_head_keeps_head_fp32_and_casts_inputs():
    model, tok = tiny_llama_reward_model()
    model.to(torch.bfloat16)
    assert upcast_reward_head(model) == ["score"]
    assert model.score.weight.dtype == torch.float32
    logits = model(**tok(["hello"], return_tensors="pt")).logits
    assert logits.dtype == torch.float32  # bf16 hidden states went through an fp32 head


def test_keep_reward_head_fp32_only_for_low_precision_or_quantized_bodies():
    from types import SimpleNamespace

    model, _ = tiny_llama_reward_model()
    assert keep_reward_head_fp32(model, SimpleNamespace(bf16=False, fp16=False)) == []  # fp32 body: nothing to do
    model.to(torch.bfloat16)
    assert keep_reward_head_fp32(model, SimpleNamespace(bf16=True, fp16=False)) == ["score"]
    assert model.score.weight.dtype == torch.float32


def test_zero3_init_disabled_restores_the_deepspeed_reference():
    from transformers.integrations import deepspeed as hf_deepspeed

    sentinel = object.__new__(type("Ref", (), {"__call__": lambda self: None}))
    hf_deepspeed._hf_deepspeed_config_weak_ref = sentinel
    try:
        with zero3_init_disabled():
            assert hf_deepspeed._hf_deepspeed_config_weak_ref is None
        assert hf_deepspeed._hf_deepspeed_config_weak_ref is sentinel
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = None


def test_reward_peft_config_targets_the_head():
    from trl import ModelConfig

    config = reward_peft_config(ModelConfig(use_peft=True, lora_r=4), head="sequence")
    assert config.task_type == "SEQ_CLS" and config.r == 4
    assert reward_peft_config(ModelConfig(use_peft=False)) is None


def _qlora_setup(kind, tmp_path):
    """For one trainer: the base model folder, a loader (path, model_args) -> (model, tokenizer), the trainer class and
    config, rows, the PEFT config, a getter of the trainable head (or step-tag embedding) and a scoring function."""
    from transformers import LlamaForCausalLM
    from trl import ModelConfig, get_peft_config

    from trl_rewards.inference.step_scoring import ProcessRewardScorer
    from trl_rewards.modeling import load_process_reward_model
    from trl_rewards.testing import tiny_llama_config, tiny_llama_token_classifier, tiny_llama_tokenizer
    from trl_rewards.trainers.bt_config import BradleyTerryConfig
    from trl_rewards.trainers.bt_trainer import BradleyTerryTrainer
    from trl_rewards.trainers.orm_config import OutcomeRewardConfig
    from trl_rewards.trainers.orm_trainer import OutcomeRewardTrainer
    from trl_rewards.trainers.prm_config import ProcessRewardConfig
    from trl_rewards.trainers.prm_trainer import ProcessRewardTrainer

    size = dict(hidden_size=64, intermediate_size=128)
    model_args = ModelConfig(
        load_in_4bit=True, dtype="float32", use_peft=True, lora_r=4, lora_target_modules=["q_proj", "v_proj"]
    )
    texts = ["Q: good good", "bad", "neutral answer"]
    if kind in ("bt", "orm"):
        base = save_tiny(*tiny_llama_reward_model(**size), tmp_path / "base")
        load = load_reward_model
        peft_config = reward_peft_config(model_args)
        head = lambda m, tok: m.base_model.model.score.modules_to_save["default"].weight  # noqa: E731
        score = lambda m, tok: RewardScorer(m, tok).score([None] * 3, texts)  # noqa: E731
        if kind == "bt":
            rows = [
                {"prompt": f"Q{i}: ", "chosen": "good " * (1 + i % 3), "rejected": "bad " * (1 + i % 4)}
                for i in range(8)
            ]
            return base, load, BradleyTerryTrainer, BradleyTerryConfig, rows, model_args, peft_config, head, score
        rows = [{"prompt": f"Q{i}: ", "completion": f"A {i % 3}", "label": i % 2 == 0} for i in range(8)]
        return base, load, OutcomeRewardTrainer, OutcomeRewardConfig, rows, model_args, peft_config, head, score

    rows = [
        {"prompt": f"Q{i}: ", "completions": [f"{i}+1={i + 1}", "x" * (1 + i % 3)], "labels": [True, i % 2 == 0]}
        for i in range(8)
    ]
    steps = [("Q: ", ["1+1=2", "xx"]), ("Q: ", ["3"])]
    score = lambda m, tok: [  # noqa: E731
        p for ps in ProcessRewardScorer(m, tok).step_probabilities(*zip(*steps, strict=True)) for p in ps
    ]
    if kind == "prm-classifier":
        base = save_tiny(*tiny_llama_token_classifier(**size), tmp_path / "base")
        load = lambda path, model_args=None: load_process_reward_model(path, "classifier", model_args=model_args)  # noqa: E731
        peft_config = reward_peft_config(model_args, head="token")
        head = lambda m, tok: m.base_model.model.score.modules_to_save["default"].weight  # noqa: E731
        return base, load, ProcessRewardTrainer, ProcessRewardConfig, rows, model_args, peft_config, head, score
    tok = tiny_llama_tokenizer()
    torch.manual_seed(0)
    base = save_tiny(LlamaForCausalLM(tiny_llama_config(tok, **size)), tok, tmp_path / "base")
    load = lambda path, model_args=None: load_process_reward_model(path, "lm", model_args=model_args)  # noqa: E731
    peft_config = get_peft_config(model_args)
    peft_config.task_type = "CAUSAL_LM"

    def head(m, tok):  # the step tag's embedding row, trained through PEFT's trainable tokens
        return m.get_input_embeddings()(torch.tensor([tok.convert_tokens_to_ids("<|prm_label|>")]))

    return base, load, ProcessRewardTrainer, ProcessRewardConfig, rows, model_args, peft_config, head, score


@pytest.mark.parametrize("kind", ["bt", "orm", "prm-classifier", "prm-lm"])
def test_qlora_trains_head_in_fp32_saves_reloads_and_merges(tmp_path, kind):
    """Every trainer on a 4-bit nf4 body + LoRA on CPU: a few steps; the head (for the LM-style PRM, the step tag's
    embedding) changes and stays fp32; the adapter reloaded on a 4-bit base holds exactly the trained weights and
    scores as the trained model; `merge` exports a plain fp32 model that scores as the adapter on an fp32 base."""
    import bitsandbytes  # noqa: F401  (the `quantization` extra, always installed by ./dev: missing fails here)
    from trl import ModelConfig

    base, load, trainer_cls, config_cls, rows, model_args, peft_config, head, score = _qlora_setup(kind, tmp_path)
    qmodel, tok = load(base, model_args=model_args)
    assert qmodel.is_loaded_in_4bit
    extra = {"model_style": "lm"} if kind == "prm-lm" else {}
    args = config_cls(
        str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        gradient_checkpointing=False,
        logging_steps=1,
        dataloader_pin_memory=False,
        **extra,
    )
    trainer = trainer_cls(
        model=qmodel.train(),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=peft_config,
    )
    before = head(trainer.model, tok).detach().clone()
    trainer.train()
    after = head(trainer.model, tok)
    assert after.dtype == torch.float32
    assert not torch.equal(before, after.detach())
    adapter = str(tmp_path / "adapter")
    trainer.save_model(adapter)

    reloaded, rtok = load(adapter, model_args=ModelConfig(load_in_4bit=True, dtype="float32"))
    assert reloaded.is_loaded_in_4bit
    trained = {
        k: v
        for k, v in trainer.model.state_dict().items()
        if any(s in k for s in ("lora_", "modules_to_save", "trainable_tokens"))
    }
    restored = reloaded.state_dict()
    assert trained and all(torch.equal(v.float(), restored[k].float()) for k, v in trained.items())
    # Exactly the trained weights; the scores agree to bitsandbytes' CPU 4-bit kernel precision only, because after
    # backward bitsandbytes keeps the trained model's quantization state in another layout (absmax in bf16).
    expected = score(trainer.model, tok)
    assert score(reloaded, rtok) == pytest.approx(expected, abs=3e-2)
    again, _ = load(adapter, model_args=ModelConfig(load_in_4bit=True, dtype="float32"))
    assert score(again, rtok) == score(reloaded, rtok)

    merged = merge_adapter(adapter, str(tmp_path / "merged"))
    plain, ptok = load(merged)
    assert not getattr(plain, "is_loaded_in_4bit", False)
    on_fp32_base = score(*load(adapter))
    assert score(plain, ptok) == pytest.approx(on_fp32_base, abs=1e-5)


@pytest.mark.parametrize("build", [tiny_bert_reward_model, tiny_llama_reward_model])
def test_a_classifier_prm_starts_from_a_trained_sequence_reward_model(tmp_path, build, caplog):
    reward_model, tokenizer = build()
    reward_model.config.reward_mean, reward_model.config.reward_std = 0.3, 2.0  # statistics of the BT scores
    path = save_tiny(reward_model, tokenizer, tmp_path / "bt")
    with caplog.at_level("INFO", logger="trl_rewards"):
        prm, _ = load_process_reward_model(path, model_style="classifier")
    assert type(prm).__name__.endswith("ForTokenClassification") and prm.config.num_labels == 2
    assert len(prm.config.id2label) == 2 and not hasattr(prm.config, "reward_mean")  # the BT statistics stay behind
    body = {name: tensor for name, tensor in reward_model.state_dict().items() if name.split(".")[0] not in HEAD_NAMES}
    loaded = prm.state_dict()
    # the same body (BERT's pooler feeds only a sequence head, so a token classifier has none)
    assert body and all(torch.equal(loaded[name], tensor) for name, tensor in body.items() if "pooler" not in name)
    head = "classifier" if hasattr(prm, "classifier") else "score"
    assert getattr(prm, head).weight.shape[0] == 2  # a new 2-label step head
    assert "LOAD REPORT" not in caplog.text  # transformers' table, replaced by one line
    assert f"{path} is a sequence reward model: the PRM starts from its weights" in caplog.text
    assert f"new reward head {head}.bias, {head}.weight initialized" in caplog.text


def test_a_base_model_keeps_its_plain_head_line_and_a_failed_load_shows_the_report(tmp_path, caplog):
    model, tokenizer = tiny_bert_reward_model()
    path = save_tiny(model.bert, tokenizer, tmp_path / "base")  # a bare encoder: no head
    with caplog.at_level("INFO", logger="trl_rewards"):
        load_reward_model(path)
    assert "LOAD REPORT" not in caplog.text and "new reward head classifier.bias, classifier.weight" in caplog.text
    caplog.clear()
    bt = save_tiny(model, tokenizer, tmp_path / "bt")
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):  # transformers' own error refers to its report
        load_reward_model(bt, num_labels=3)
    assert "LOAD REPORT" in caplog.text
