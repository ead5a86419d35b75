"""Model loading: decoder/encoder detection, head upcasting, QLoRA (4-bit nf4 on CPU) train, save, reload, merge."""

import pytest
import torch
from datasets import Dataset

from trl_rewards.modeling import (
    is_decoder_model,
    load_reward_model,
    merge_adapter,
    reward_peft_config,
    upcast_reward_head,
    zero3_init_disabled,
)
from trl_rewards.scoring import RewardScorer
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


def test_qlora_trains_head_in_fp32_saves_reloads_and_merges(tmp_path):
    """4-bit nf4 body + LoRA + fp32 head on CPU: a few BT steps, the head changes and stays fp32; the adapter
    reloaded on a 4-bit base scores exactly as the trained model; `merge` exports a plain fp32 model."""
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (the `quantization` extra)")
    from trl import ModelConfig

    from trl_rewards.configs import BradleyTerryConfig
    from trl_rewards.trainers.bt import BradleyTerryTrainer

    model, tok = tiny_llama_reward_model(hidden_size=64, intermediate_size=128)
    base = save_tiny(model, tok, tmp_path / "base")
    model_args = ModelConfig(
        load_in_4bit=True, dtype="float32", use_peft=True, lora_r=4, lora_target_modules=["q_proj", "v_proj"]
    )
    qmodel, _ = load_reward_model(base, model_args=model_args)
    assert qmodel.is_loaded_in_4bit
    rows = [{"prompt": f"Q{i}: ", "chosen": "good " * (1 + i % 3), "rejected": "bad " * (1 + i % 4)} for i in range(8)]
    args = BradleyTerryConfig(
        str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        gradient_checkpointing=False,
        logging_steps=1,
        dataloader_pin_memory=False,
    )
    trainer = BradleyTerryTrainer(
        model=qmodel.train(),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=reward_peft_config(model_args),
    )
    head = trainer.model.base_model.model.score.modules_to_save["default"].weight
    before = head.detach().clone()
    trainer.train()
    assert head.dtype == torch.float32
    assert not torch.equal(before, head)
    adapter = str(tmp_path / "adapter")
    trainer.save_model(adapter)

    texts = ["Q: good good", "bad", "neutral answer"]
    reloaded, rtok = load_reward_model(adapter, model_args=ModelConfig(load_in_4bit=True, dtype="float32"))
    trained = {k: v for k, v in trainer.model.state_dict().items() if "lora_" in k or "modules_to_save" in k}
    restored = reloaded.state_dict()
    assert trained and all(torch.equal(v.float(), restored[k].float()) for k, v in trained.items())
    # Exactly the trained weights; the scores agree to bitsandbytes' CPU 4-bit kernel precision only, because after
    # backward bitsandbytes keeps the trained model's quantization state in another layout (absmax in bf16).
    expected = RewardScorer(trainer.model, tok).score([None] * 3, texts)
    assert RewardScorer(reloaded, rtok).score([None] * 3, texts) == pytest.approx(expected, abs=3e-2)
    again, _ = load_reward_model(adapter, model_args=ModelConfig(load_in_4bit=True, dtype="float32"))
    assert RewardScorer(again, rtok).score([None] * 3, texts) == RewardScorer(reloaded, rtok).score([None] * 3, texts)

    merged = merge_adapter(adapter, str(tmp_path / "merged"))
    plain = RewardScorer.from_pretrained(merged)
    assert not getattr(plain.model, "is_loaded_in_4bit", False)
    on_fp32_base = RewardScorer(*load_reward_model(adapter)).score([None] * 3, texts)
    assert plain.score([None] * 3, texts) == pytest.approx(on_fp32_base, abs=1e-5)
