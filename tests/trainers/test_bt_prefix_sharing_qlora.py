"""BradleyTerryTrainer with `prefix_sharing=True` on a QLoRA model (4-bit nf4 body from bitsandbytes + LoRA, on CPU):
loss, rewards and gradients equal the unshared path on the same quantized model, and training follows it.

Tolerances. Both paths run the same nf4 weights, dequantized to fp32 for each matmul, so the forward differs only in
float summation order as in the fp32 tests: loss, rewards and the fp32 head's gradient agree to 1e-5. The LoRA
weights of the 4-bit model are bf16 here (as PEFT/TRL leave them), so their gradients are rounded to bf16 at the end
of a sum taken in another order: they agree to two bf16 ulps of the tensor's largest entry (2 · 2^-7 · max|g|;
measured up to 0.65 ulp). In training, Adam's first update is `lr · sign(g)` per entry, so an entry whose bf16
gradient is within an ulp of zero may move by `lr` differently; the loss trajectories then drift apart slowly
(measured 1.6e-4 at the third step with lr 1e-2): the first step's loss must agree to 1e-5 (same model), the next to
1e-3.
"""

import bitsandbytes  # noqa: F401  (the `quantization` extra, always installed by ./dev: missing fails here)
import pytest
import torch
from datasets import Dataset
from trl import ModelConfig

from trl_rewards.modeling import load_reward_model, reward_peft_config
from trl_rewards.testing import save_tiny, tiny_llama_reward_model, tiny_training_args
from trl_rewards.trainers.bt_config import BradleyTerryConfig
from trl_rewards.trainers.bt_trainer import BradleyTerryTrainer

TOL = dict(atol=1e-5, rtol=1e-5)
ROWS = [
    {"prompt": "A long question that takes more tokens than both answers: ", "chosen": "yes", "rejected": "no"},
    {"prompt": "Q: ", "chosen": "a fairly long chosen answer here", "rejected": "short"},
    {"prompt": "P ", "chosen": "same start, then A", "rejected": "same start, then B"},
    {"prompt": "The longest prompt of the batch, by a wide margin: ", "chosen": "c", "rejected": "rr"},
]
MODEL_ARGS = ModelConfig(
    load_in_4bit=True, dtype="float32", use_peft=True, lora_r=4, lora_target_modules=["q_proj", "v_proj"]
)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny(*tiny_llama_reward_model(hidden_size=64, intermediate_size=128), tmp_path_factory.mktemp("base"))


def _trainer(model, tok, tmp_path, sharing, rows=ROWS, **kw):
    return BradleyTerryTrainer(
        model=model,
        args=tiny_training_args(BradleyTerryConfig, tmp_path / str(sharing), prefix_sharing=sharing, **kw),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=None if hasattr(model, "peft_config") else reward_peft_config(MODEL_ARGS),
    )


def _loss_rewards_grads(trainer, model):
    model.zero_grad()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(ROWS))])
    loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), outputs.logits.detach(), grads


def test_loss_rewards_and_gradients_equal_unshared_path_on_the_same_4bit_model(base, tmp_path):
    qmodel, tok = load_reward_model(base, model_args=MODEL_ARGS)
    assert qmodel.is_loaded_in_4bit
    plain = _trainer(qmodel.train(), tok, tmp_path, False)
    model = plain.model  # the PEFT model: the shared trainer gets the very same object
    shared = _trainer(model, tok, tmp_path, True)
    assert type(shared.data_collator).__name__ == "PrefixSharingCollator"
    loss, rewards, grads = _loss_rewards_grads(plain, model)
    packed_loss, packed_rewards, packed_grads = _loss_rewards_grads(shared, model)
    torch.testing.assert_close(packed_loss, loss, **TOL)
    torch.testing.assert_close(packed_rewards, rewards, **TOL)
    assert grads.keys() == packed_grads.keys()
    assert any("lora_B" in n for n in grads) and any("modules_to_save" in n for n in grads)
    for name, g in grads.items():
        assert g.dtype in (torch.float32, torch.bfloat16), name
        atol = 1e-5 if g.dtype == torch.float32 else 2 * torch.finfo(torch.bfloat16).eps * g.abs().max().item()
        torch.testing.assert_close(packed_grads[name], g, atol=atol, rtol=0, msg=name)
    assert all(grads[n].abs().max() > 1e-3 for n in grads if "lora_B" in n or "modules_to_save" in n)
    # the unshared path again: the comparison is not against a state the first backward changed
    again_loss, again_rewards, _ = _loss_rewards_grads(plain, model)
    assert torch.equal(again_loss, loss) and torch.equal(again_rewards, rewards)


def test_training_follows_the_unshared_path(base, tmp_path):
    losses, heads = {}, {}
    for sharing in (False, True):
        qmodel, tok = load_reward_model(base, model_args=MODEL_ARGS)
        trainer = _trainer(
            qmodel.train(), tok, tmp_path, sharing, ROWS * 3, store_reward_stats=False, learning_rate=1e-2
        )
        head = trainer.model.base_model.model.score.modules_to_save["default"].weight
        before = head.detach().clone()
        trainer.train()
        losses[sharing] = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        assert head.dtype == torch.float32 and not torch.equal(head.detach(), before)
        heads[sharing] = head.detach().clone()
    assert len(losses[True]) == len(losses[False]) == 3
    assert losses[True][0] == pytest.approx(losses[False][0], abs=1e-5)
    assert losses[True] == pytest.approx(losses[False], abs=1e-3)
    torch.testing.assert_close(heads[True], heads[False], atol=1e-3, rtol=0)
