"""Reward functions in TRL's contract: one contract test suite over every reward function (the ensemble included),
then what each one promises on its own (scores equal to the scorers', truncation counted, normalization, lazy
loading and pickling, option checks)."""

import inspect
import math
import pickle
from types import SimpleNamespace

import pytest
import torch
from trl.trainer.utils import get_callable_name

from trl_rewards.inference.aggregation import aggregate_step_scores
from trl_rewards.inference.sequence_scoring import RewardScorer
from trl_rewards.inference.step_scoring import ProcessRewardScorer
from trl_rewards.rewards.base import default_device
from trl_rewards.rewards.ensemble import RewardEnsemble
from trl_rewards.rewards.model_rewards import ProcessRewardFunction, RewardModelFunction
from trl_rewards.rewards.rule_rewards import AnswerCorrectnessReward
from trl_rewards.testing import (
    save_tiny,
    tiny_bert_reward_model,
    tiny_bert_token_classifier,
    tiny_llama_reward_model,
    tiny_llama_token_classifier,
)

PROMPTS = ["What is 2 + 3?\n", "Add 4 and 4.\n", "Tell me 7 * 6.\n", "Say hi.\n"]
COMPLETIONS = ["2 + 3 = 5.\nThe answer is 5.", "4 + 4 = 9.\nThe answer is 9.", "The answer is 42.", "hi"]
ANSWERS = [5, 8, 42, 3]
# What TRL passes besides the batch: the dataset columns, then its hooks.
EXTRA = {"answer": ANSWERS, "trainer_state": SimpleNamespace(global_step=3), "log_extra": lambda *a: None}


def _bert_path(tmp_path_factory):
    return save_tiny(*tiny_bert_reward_model(seed=2), tmp_path_factory.mktemp("bert_rm"))


FACTORIES = {
    "rm_loaded": lambda tmp: RewardModelFunction(*tiny_llama_reward_model(seed=1), name="llama_rm", device="cpu"),
    "rm_path": lambda tmp: RewardModelFunction(_bert_path(tmp), name="bert_rm", max_length=24),
    "prm": lambda tmp: ProcessRewardFunction(*tiny_llama_token_classifier(seed=3), name="prm", aggregation="min"),
    "answer": lambda tmp: AnswerCorrectnessReward(),
    "ensemble": lambda tmp: RewardEnsemble(
        [FACTORIES["rm_loaded"](tmp), FACTORIES["prm"](tmp), AnswerCorrectnessReward()], aggregation="median"
    ),
}
NAMES = {"rm_loaded": "llama_rm", "rm_path": "bert_rm", "prm": "prm", "answer": "answer_correctness"}
NAMES["ensemble"] = "reward_ensemble"


@pytest.fixture(params=sorted(FACTORIES))
def reward(request, tmp_path_factory):
    return request.param, FACTORIES[request.param](tmp_path_factory)


def _call(fn, prompts=PROMPTS, completions=COMPLETIONS, **kwargs):
    return fn(prompts=list(prompts), completions=list(completions), completion_ids=None, **kwargs)


def test_contract_signature_and_name(reward):
    kind, fn = reward
    params = list(inspect.signature(type(fn).__call__).parameters.values())
    assert [p.name for p in params] == ["self", "prompts", "completions", "completion_ids", "kwargs"]
    assert params[3].default is None and params[4].kind is inspect.Parameter.VAR_KEYWORD
    assert fn.__name__ == NAMES[kind]
    assert get_callable_name(fn) == NAMES[kind]  # the key of TRL's rewards/{name}/mean metrics
    assert not isinstance(fn, torch.nn.Module)  # TRL would treat a module as a bare reward model


def test_contract_right_length_and_types(reward):
    _, fn = reward
    for n in (1, 3, 4):
        out = _call(fn, PROMPTS[:n], COMPLETIONS[:n], answer=ANSWERS[:n])
        assert isinstance(out, list) and len(out) == n
        assert all(v is None or (isinstance(v, float) and math.isfinite(v)) for v in out)


def test_contract_ignores_extra_kwargs(reward):
    _, fn = reward
    logged = {}
    plain = _call(fn, answer=ANSWERS)
    extra = _call(fn, **EXTRA, log_metric=logged.__setitem__, unknown_column=[0] * 4)
    assert extra == pytest.approx(plain, abs=1e-6)


def test_contract_pickle_round_trip(reward):
    _, fn = reward
    before = _call(fn, answer=ANSWERS)
    clone = pickle.loads(pickle.dumps(fn))
    assert clone.__name__ == fn.__name__
    assert _call(clone, answer=ANSWERS) == pytest.approx(before, abs=1e-6)


@pytest.mark.parametrize(
    "kind, completion, answer, expected_none",
    [
        ("rm_loaded", "", 1, False),  # a reward model scores anything, even an empty completion
        ("rm_path", "", 1, False),
        ("prm", "\n\n", 1, True),  # no step to score
        ("answer", "The answer is 1.", None, True),  # no gold answer
        ("ensemble", "\n\n", None, False),  # the reward model still scores it
    ],
)
def test_contract_none_handling(kind, completion, answer, expected_none, tmp_path_factory):
    fn = FACTORIES[kind](tmp_path_factory)
    out = _call(fn, ["p\n", "q\n"], [completion, "The answer is 1."], answer=[answer, 1])
    assert (out[0] is None) is expected_none
    assert out[1] is not None


def test_ensemble_returns_none_when_every_member_does():
    ensemble = RewardEnsemble([AnswerCorrectnessReward(), ProcessRewardFunction(*tiny_llama_token_classifier())])
    assert _call(ensemble, ["p", "q"], ["", "The answer is 1."], answer=[None, 1])[0] is None


# RewardModelFunction ------------------------------------------------------------------------------------------------


def test_reward_model_function_equals_scorer_text_and_chat():
    model, tok = tiny_llama_reward_model()
    fn = RewardModelFunction(model, tok, batch_size=3, max_tokens_per_batch=64, device="cpu")
    scorer = RewardScorer(model, tok)
    assert _call(fn) == pytest.approx(scorer.score(PROMPTS, COMPLETIONS), abs=1e-5)
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    completions = [[{"role": "assistant", "content": c}] for c in COMPLETIONS]  # how TRL passes them
    assert _call(fn, prompts, completions) == pytest.approx(scorer.score(prompts, completions), abs=1e-5)
    # the chat template is applied: a conversational row differs from its plain-text concatenation
    assert _call(fn, prompts[:1], completions[:1])[0] != pytest.approx(_call(fn, PROMPTS[:1], COMPLETIONS[:1])[0])


def test_reward_model_function_counts_truncation():
    fn = RewardModelFunction(*tiny_llama_reward_model(), name="rm", max_length=12)
    logged = []
    _call(fn, log_metric=lambda name, value: logged.append((name, value)))
    # token counts: <s> + characters + </s>; rows 0, 1 and 2 exceed 12 tokens, row 3 ("Say hi.\nhi") has 12
    assert logged == [("rm/num_truncated", 3.0)]
    _call(fn)
    assert fn.num_truncated == 6


def test_reward_model_function_normalizes_with_config_statistics():
    model, tok = tiny_llama_reward_model()
    raw = _call(RewardModelFunction(model, tok))
    model.config.reward_mean, model.config.reward_std = 0.5, 2.0
    normalized = _call(RewardModelFunction(model, tok, normalize=True))
    assert normalized == pytest.approx([(r - 0.5) / 2.0 for r in raw], abs=1e-6)
    del model.config.reward_mean
    with pytest.raises(ValueError, match="normalize=True needs `reward_mean`"):
        RewardModelFunction(model, tok, normalize=True)


def test_reward_model_function_path_is_lazy_and_pickles_without_weights(tmp_path):
    model, tok = tiny_bert_reward_model(seed=4)
    path = save_tiny(model, tok, tmp_path / "rm")
    fn = RewardModelFunction(path)
    assert fn.__name__ == "rm" and fn._model is None  # nothing loaded yet
    light = pickle.dumps(fn)
    scores = _call(fn)
    assert scores == pytest.approx(RewardScorer(model.eval(), tok).score(PROMPTS, COMPLETIONS), abs=1e-5)
    assert fn._model is not None
    assert len(pickle.dumps(fn)) == pytest.approx(len(light), rel=0.1)  # the loaded model is dropped
    assert len(pickle.dumps(RewardModelFunction(model, tok))) > 10 * len(light)  # a model object travels whole
    assert _call(pickle.loads(pickle.dumps(fn))) == pytest.approx(scores, abs=1e-6)


def test_reward_model_function_loads_an_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_llama_reward_model(seed=5)
    base = save_tiny(model, tok, tmp_path / "base")
    peft_model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_()  # a non-trivial adapter, so that its scores differ from the base's
    adapter = save_tiny(peft_model, tok, tmp_path / "adapter")
    fn = RewardModelFunction(adapter, base_model_name_or_path=base)
    expected = RewardScorer(peft_model.eval(), tok).score(PROMPTS, COMPLETIONS)
    assert _call(fn) == pytest.approx(expected, abs=1e-5)
    assert _call(fn) != pytest.approx(_call(RewardModelFunction(base)), abs=1e-4)


def test_reward_model_function_device(monkeypatch, tmp_path):
    fn = RewardModelFunction(*tiny_llama_reward_model(), device="cpu")
    assert fn.scorer.device == torch.device("cpu") and fn.device == torch.device("cpu")
    assert default_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert RewardModelFunction(str(tmp_path)).device == torch.device("cuda")  # lazy: nothing moved yet


def test_default_device_is_this_ranks_gpu(monkeypatch):
    """Under a launcher every rank gets its own GPU, whenever the reward function is built (not cuda:0 for all)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert default_device() == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "2")  # names no visible GPU (CUDA_VISIBLE_DEVICES per process): current device
    assert default_device() == torch.device("cuda")
    monkeypatch.delenv("LOCAL_RANK")
    assert default_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert default_device() == torch.device("cpu")


def test_reward_model_function_rejects_bad_options():
    model, tok = tiny_llama_reward_model()
    bert, bert_tok = tiny_bert_reward_model()
    with pytest.raises(ValueError, match="padding_side must be one of"):
        RewardModelFunction(model, tok, padding_side="middle")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        RewardModelFunction(model, tok, batch_size=0)
    with pytest.raises(ValueError, match="max_tokens_per_batch must be >= 1"):
        RewardModelFunction(model, tok, max_tokens_per_batch=0)
    with pytest.raises(ValueError, match="needs its tokenizer object"):
        RewardModelFunction(model)
    for option in ("model_args", "base_model_name_or_path", "dtype"):
        with pytest.raises(ValueError, match=f"{option} only applies when the model is given as a path"):
            RewardModelFunction(model, tok, **{option: "x"})
    with pytest.raises(TypeError, match="model must be a path or a loaded torch.nn.Module"):
        RewardModelFunction(42, tok)
    with pytest.raises(ValueError, match="need a chat template"):
        _call(RewardModelFunction(bert, bert_tok, name="bert"), [[{"role": "user", "content": "a"}]], ["b"])
    with pytest.raises(ValueError, match="mixes text prompts"):
        _call(RewardModelFunction(model, tok), ["a"], [[{"role": "assistant", "content": "b"}]])


# ProcessRewardFunction ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "aggregation, temperature", [("product", None), ("min", None), ("last", None), ("mean", None), ("softmin", 0.3)]
)
def test_process_reward_function_equals_scorer_and_aggregation(aggregation, temperature):
    model, tok = tiny_bert_token_classifier(seed=6)
    fn = ProcessRewardFunction(model, tok, step_separator=" | ", aggregation=aggregation, temperature=temperature)
    completions = ["a = 1 | b = 2 | The answer is 3.", " | only step | ", "single"]
    probs = ProcessRewardScorer(model, tok).step_probabilities(
        PROMPTS[:3], [["a = 1", "b = 2", "The answer is 3."], ["only step"], ["single"]]
    )
    expected = [aggregate_step_scores(p, aggregation, temperature) for p in probs]
    assert _call(fn, PROMPTS[:3], completions) == pytest.approx(expected, abs=1e-9)


def test_process_reward_function_chat_prompts_and_path(tmp_path):
    model, tok = tiny_llama_token_classifier(seed=7)
    path = save_tiny(model, tok, tmp_path / "prm")
    fn = ProcessRewardFunction(path, model_style="classifier")
    assert fn.__name__ == "prm" and fn._model is None
    chat = _call(fn, [[{"role": "system", "content": "Be exact."}, {"role": "user", "content": "1+1?"}]], ["2\n."])
    plain = _call(fn, ["Be exact.\n1+1?"], ["2\n."])
    assert chat == pytest.approx(plain, abs=1e-9)
    assert pickle.loads(pickle.dumps(fn))._model is None


def test_process_reward_function_rejects_bad_options():
    model, tok = tiny_llama_token_classifier()
    with pytest.raises(ValueError, match="aggregation='max'"):
        ProcessRewardFunction(model, tok, aggregation="max")
    with pytest.raises(ValueError, match="temperature is used only by method='softmin'"):
        ProcessRewardFunction(model, tok, temperature=1.0)
    with pytest.raises(ValueError, match="needs a finite temperature"):
        ProcessRewardFunction(model, tok, aggregation="softmin")
    with pytest.raises(ValueError, match="step_separator must be a non-empty string"):
        ProcessRewardFunction(model, tok, step_separator="")
    with pytest.raises(ValueError, match="text_separator is not used"):
        ProcessRewardFunction(model, tok, text_separator="\n")
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        ProcessRewardFunction(model, tok, bogus=1)  # forwarded to ProcessRewardScorer, which rejects it


# AnswerCorrectnessReward --------------------------------------------------------------------------------------------


def _last_word(text):
    return text.split()[-1] if text.split() else None


def test_answer_correctness_cases():
    fn = AnswerCorrectnessReward(correct_reward=2.0, incorrect_reward=-1.0)
    completions = ["The answer is 5.", "The answer is 1,000", "no answer", "The answer is 7.", "The answer is 3"]
    answers = [5, "1000", 4, None, "3.0"]
    assert _call(fn, ["p"] * 5, completions, answer=answers) == [2.0, 2.0, -1.0, None, 2.0]
    chat = [[{"role": "assistant", "content": "The answer is 5."}]]
    assert _call(fn, [[{"role": "user", "content": "q"}]], chat, answer=[5]) == [2.0]
    custom = AnswerCorrectnessReward(extractor=_last_word, answer_column="gold", name="last_word")
    assert _call(custom, ["p", "p"], ["it is Paris", "London"], gold=["Paris", "Paris"]) == [1.0, 0.0]


def test_answer_correctness_errors():
    fn = AnswerCorrectnessReward()
    with pytest.raises(KeyError, match="no 'answer' column"):
        _call(fn, ["p"], ["The answer is 1"])
    with pytest.raises(ValueError, match="1 values in 'answer' for 2 completions"):
        _call(fn, ["p", "q"], ["a", "b"], answer=[1])
    with pytest.raises(ValueError, match="clashes with an argument"):
        AnswerCorrectnessReward(answer_column="completions")
    with pytest.raises(TypeError, match="extractor must be callable"):
        AnswerCorrectnessReward(extractor="regex")
