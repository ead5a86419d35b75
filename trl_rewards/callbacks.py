"""Every `TrainerCallback` of the package: win rate of a policy against reference completions while it trains (GRPO,
RLOO, or any `transformers.Trainer`), running reward normalizers saved with every checkpoint, and reward-function
metrics merged into PPO's logs.

Callbacks import `transformers`' Trainer stack (peft, bitsandbytes when installed); they live here so that the
scorers, reward functions, normalizers and the ensemble stay import-light."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .evaluation import metrics
from .evaluation.runner import as_scorer, scores_depend_on_batch
from .rewards.normalization import NORMALIZERS_FILENAME, RunningZScore, restore_normalizers

logger = logging.getLogger(__name__)

KEEP_BEST = ("win_rate", "win_probability")


class WinRateCallback(TrainerCallback):
    """
    Every `eval_steps` optimizer steps (and at the last step), generates greedily with the trainer's policy on a fixed
    prompt set, scores the completions and the reference completions with a reward model, and logs
    `eval_win_rate` (`metrics.win_rate`: the policy's completion scores higher) and `eval_win_probability`
    (`metrics.win_probability`: mean σ(policy − reference)).

    The reference completions are scored once, at the first evaluation (wrap the scorer in a [`CachedScorer`] to
    reuse their scores across runs), unless the scorer's scores depend on the batch (a normalizing
    `RewardEnsemble`, see `evaluation.scores_depend_on_batch`): then policy and reference completions are scored
    together in one call at every evaluation, so that they share one scale.

    Evaluations run in `on_step_end`, which receives the policy (`model`) and the `processing_class` from the trainer
    after each optimizer step. Values are logged with `trainer.log` while the policy is in eval mode, so that they
    reach every logging integration (W&B, TensorBoard, `state.log_history`) and GRPO/RLOO keep their accumulated
    training metrics (flushed only by a train-mode `log`) for the next regular log. Every process generates the whole
    prompt set, which suits the small fixed set this is meant for and keeps ZeRO-3 generation collective.

    Args:
        trainer ([`~transformers.Trainer`]):
            The trainer to which the callback is added (used to log, to unwrap the model and to save checkpoints).
        scorer:
            Anything with `score(prompts, completions) -> list[float]` ([`RewardScorer`], [`CachedScorer`]) or a TRL
            reward function (wrapped with `evaluation.as_scorer`).
        prompts (`Sequence[str | list[dict]]`):
            Fixed evaluation prompts, in the trainer's format: text, or chat messages (the chat template is applied
            with a generation prompt, and completions are scored as `[{"role": "assistant", "content": text}]`).
        reference_completions (`Sequence[str | list[dict]]`):
            One reference completion per prompt.
        eval_steps (`int`, *optional*, defaults to `50`):
            Evaluate every this many optimizer steps.
        max_new_tokens (`int`, *optional*, defaults to `32`):
            Generation length (greedy decoding).
        batch_size (`int`, *optional*, defaults to `8`):
            Prompts per `generate` call.
        ties (`str`, *optional*, defaults to `"loss"`):
            How equal scores count in the win rate, one of `metrics.TIE_POLICIES`.
        keep_best (`str`, *optional*):
            `"win_rate"` or `"win_probability"`: whenever it beats its best value so far, the policy is saved with
            `trainer.save_model` to `output_dir/best-win-rate` (or `best-win-probability`), with `best.json`.
        evaluate_on_start (`bool`, *optional*, defaults to `True`):
            Also evaluate the initial policy (step 0), the baseline the later values compare to.

    Attributes:
        history (`list[dict]`): one record per evaluation: `step`, `win_rate`, `win_probability`, the mean policy and
            reference scores, and the completions.
    """

    def __init__(
        self,
        trainer,
        scorer,
        prompts: Sequence[Any],
        reference_completions: Sequence[Any],
        *,
        eval_steps: int = 50,
        max_new_tokens: int = 32,
        batch_size: int = 8,
        ties: str = "loss",
        keep_best: str | None = None,
        evaluate_on_start: bool = True,
    ):
        if not prompts:
            raise ValueError("prompts is empty")
        if len(reference_completions) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(reference_completions)} reference completions")
        for name, value in (
            ("eval_steps", eval_steps),
            ("max_new_tokens", max_new_tokens),
            ("batch_size", batch_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if ties not in metrics.TIE_POLICIES:
            raise ValueError(f"ties must be one of {metrics.TIE_POLICIES}, got {ties!r}")
        if keep_best is not None and keep_best not in KEEP_BEST:
            raise ValueError(f"keep_best must be one of {KEEP_BEST} or None, got {keep_best!r}")
        self.trainer = trainer
        self.scorer = as_scorer(scorer)
        self.prompts = list(prompts)
        self.reference_completions = [
            self._as_completion(p, c) for p, c in zip(prompts, reference_completions, strict=True)
        ]
        self.eval_steps = eval_steps
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.ties = ties
        self.keep_best = keep_best
        self.evaluate_on_start = evaluate_on_start
        self.reference_scores: list[float] | None = None
        self.best: float = -math.inf
        self.history: list[dict[str, Any]] = []

    @staticmethod
    def _as_completion(prompt: Any, text: Any) -> Any:
        if isinstance(prompt, list) and isinstance(text, str):
            return [{"role": "assistant", "content": text}]
        return text

    @property
    def best_dir(self) -> str | None:
        """Where the best policy is saved, or `None` without `keep_best`."""
        if self.keep_best is None:
            return None
        return os.path.join(self.trainer.args.output_dir, "best-" + self.keep_best.replace("_", "-"))

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.evaluate_on_start and state.global_step == 0:
            self.evaluate(args, state, control, model, processing_class)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step % self.eval_steps == 0 or state.global_step >= state.max_steps:
            self.evaluate(args, state, control, model, processing_class)

    def _prompt_ids(self, tokenizer) -> list[list[int]]:
        if isinstance(self.prompts[0], list):
            return [
                tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)[
                    "input_ids"
                ]
                for p in self.prompts
            ]
        return tokenizer(self.prompts)["input_ids"]  # as GRPO tokenizes text prompts

    @torch.no_grad()
    def generate(self, model, processing_class) -> list[Any]:
        """Greedy completions of `self.prompts` by `model`, decoded without special tokens."""
        from trl.models.utils import unwrap_model_for_generation

        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        args = self.trainer.args
        texts = []
        with unwrap_model_for_generation(
            self.trainer.model_wrapped,
            self.trainer.accelerator,
            gather_deepspeed3_params=getattr(args, "ds3_gather_for_generation", True),
            gradient_checkpointing_kwargs=getattr(args, "activation_checkpointing_kwargs", None),
        ) as unwrapped:
            device = next(unwrapped.parameters()).device
            all_ids = self._prompt_ids(tokenizer)
            for start in range(0, len(all_ids), self.batch_size):
                batch = all_ids[start : start + self.batch_size]
                width = max(len(ids) for ids in batch)
                input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
                attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, ids in enumerate(batch):  # left padding: every prompt ends where generation starts
                    input_ids[row, width - len(ids) :] = torch.tensor(ids)
                    attention_mask[row, width - len(ids) :] = 1
                output = unwrapped.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    pad_token_id=pad,
                )
                texts += tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
        return [self._as_completion(p, t) for p, t in zip(self.prompts, texts, strict=True)]

    def evaluate(self, args, state, control, model, processing_class) -> dict[str, Any]:
        """Generates, scores and logs once; returns the history record."""
        if processing_class is None:
            raise ValueError("WinRateCallback needs the trainer's processing_class (a tokenizer) to generate")
        was_training = model.training
        model.eval()
        try:
            completions = self.generate(model, processing_class)
            if scores_depend_on_batch(self.scorer):
                joint = self.scorer.score(self.prompts * 2, completions + self.reference_completions)
                scores, self.reference_scores = joint[: len(completions)], joint[len(completions) :]
            else:
                if self.reference_scores is None:
                    self.reference_scores = self.scorer.score(self.prompts, self.reference_completions)
                scores = self.scorer.score(self.prompts, completions)
            record = {
                "step": state.global_step,
                "win_rate": float(metrics.win_rate(scores, self.reference_scores, ties=self.ties)),
                "win_probability": metrics.win_probability(scores, self.reference_scores),
                "policy_score": float(sum(scores) / len(scores)),
                "reference_score": float(sum(self.reference_scores) / len(self.reference_scores)),
                "completions": completions,
            }
            self.history.append(record)
            # Logged in eval mode on purpose: see the class docstring. `log` clears `should_log`, which would cancel
            # the trainer's regular log of this step: restore it.
            should_log = control.should_log
            self.trainer.log({f"eval_{k}": v for k, v in record.items() if k not in ("step", "completions")})
            control.should_log = self.trainer.control.should_log = should_log
            if self.keep_best is not None and record[self.keep_best] > self.best:
                self.best = record[self.keep_best]
                self._save_best(record)
        finally:
            if was_training:
                model.train()
        return record

    def _save_best(self, record: dict[str, Any]) -> None:
        self.trainer.save_model(self.best_dir)
        if self.trainer.accelerator.is_main_process:
            summary = {k: v for k, v in record.items() if k != "completions"}
            with open(os.path.join(self.best_dir, "best.json"), "w") as f:
                json.dump({"metric": self.keep_best, **summary}, f, indent=2)
        logger.info(
            "step %d: best %s %.4f, policy saved to %s", record["step"], self.keep_best, self.best, self.best_dir
        )


class NormalizerCheckpointCallback(TrainerCallback):
    r"""
    Saves running normalizers with every checkpoint, as `reward_normalizers.json` in `checkpoint-{global_step}`.

    Only the main process writes: with `sync=True` all ranks hold the same statistics; with `sync=False` rank 0's are
    saved. On resume (`trainer.train(resume_from_checkpoint=...)` with checkpoints in `output_dir`) the statistics of
    the checkpoint the run resumes from, `checkpoint-{global_step}`, are restored when training begins, on every rank,
    so a resumed run neither starts from empty statistics nor keeps those of the killed run's later steps. (Resuming
    from a checkpoint outside `output_dir`: call [`~trl_rewards.rewards.normalization.restore_normalizers`] yourself.)
    [`for_ensemble`] builds one for a [`RewardEnsemble`] with running normalization; it also keeps every reward
    counted once when a checkpoint falls inside a GRPO generation batch (`steps_per_generation` larger than the
    accumulation steps): it saves the statistics from before the call that scored that batch, which the resumed run
    scores again.

    Args:
        normalizers (`dict[str, RunningZScore]`):
            Normalizers by name (e.g. reward function name); the names are the JSON keys.
    """

    def __init__(self, normalizers: Mapping[str, RunningZScore], ensemble=None):
        self.normalizers = normalizers
        self.ensemble = ensemble

    @classmethod
    def for_ensemble(cls, ensemble) -> NormalizerCheckpointCallback:
        """
        The callback saving a [`RewardEnsemble`]'s running statistics (`normalization="running"` only); restore them
        with `restore_normalizers(checkpoint_dir, ensemble.normalizers)`.
        """
        if ensemble.normalization != "running":
            raise ValueError(f"only normalization='running' has statistics to save, got {ensemble.normalization!r}")
        return cls(ensemble.normalizers, ensemble=ensemble)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > 0:  # the Trainer has loaded a checkpoint's state: resume its statistics too
            checkpoint_dir = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
            if os.path.isfile(os.path.join(checkpoint_dir, NORMALIZERS_FILENAME)):
                restore_normalizers(checkpoint_dir, self.normalizers)
                logger.info("restored reward normalizers from %s", checkpoint_dir)
            else:
                logger.warning(
                    "resuming at step %d without %s in %s: the running reward statistics start empty",
                    state.global_step,
                    NORMALIZERS_FILENAME,
                    checkpoint_dir,
                )
        return control

    def _inside_generation_batch(self, args, state) -> bool:
        last = getattr(self.ensemble, "before_last_call", None)
        if last is None or last[0] is None:
            return False
        micro_steps = getattr(args, "steps_per_generation", None) or args.gradient_accumulation_steps
        per_batch = micro_steps * getattr(args, "num_iterations", 1) / args.gradient_accumulation_steps
        return state.global_step - last[0] < per_batch

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            # The Trainer has already created this folder (on_save runs after the checkpoint is written).
            checkpoint_dir = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
            os.makedirs(checkpoint_dir, exist_ok=True)
            payload = {name: normalizer.state_dict() for name, normalizer in self.normalizers.items()}
            if self._inside_generation_batch(args, state):
                # GRPO scores a whole generation batch at its first step; resumed from a checkpoint inside it, the
                # trainer generates and scores again: save the statistics from before that call, or it counts twice.
                payload = self.ensemble.before_last_call[1]
            path = os.path.join(checkpoint_dir, NORMALIZERS_FILENAME)
            with open(path + ".tmp", "w") as f:
                json.dump(payload, f, indent=2)
            os.replace(path + ".tmp", path)  # a crash mid-write never leaves a truncated file behind
        return control


class RewardMetricsCallback(TrainerCallback):
    """Adds the averages of what a [`RewardFunctionModule`]'s reward function logged to each trainer log entry."""

    def __init__(self, module):
        self.module = module

    def on_log(self, args, state, control, logs=None, **kwargs):
        metrics = self.module.pop_metrics()
        if logs is not None:
            logs.update(metrics)
        if state.log_history:  # the Trainer appended a copy of `logs` before calling on_log
            state.log_history[-1].update(metrics)
        return control


def attach_reward_metrics(trainer, module) -> RewardMetricsCallback:
    """
    Registers a [`RewardMetricsCallback`] first in `trainer`'s callbacks, so that the reward metrics are in each log
    entry (and in `trainer.state.log_history`) before the reporting integrations (W&B, TensorBoard) read it.
    """
    callback = RewardMetricsCallback(module)
    trainer.callback_handler.callbacks.insert(0, callback)
    return callback


class RewardHackingMonitor(TrainerCallback):
    r"""
    Instruments for reward hacking in GRPO / RLOO, logged at every logging step as `hacking/*` (TRL #6350):

    - `hacking/length_spearman`: Spearman correlation between completion length (characters) and the total reward
      (the trainer's weighted sum of its reward functions) over the last generation batch: a reward that buys length;
    - `hacking/disagreement`: the ensemble members' disagreement (`{ensemble}/disagreement`, when one is logged);
    - `hacking/held_out_reward` and `hacking/held_out_drop`: the mean reward of the same completions under a held-out
      reward function the policy never trains against, and how far it fell below its first value: the optimized
      reward rising while this one falls is the over-optimization signature (Gao et al. 2023);
    - `hacking/kl`: the trainer's `kl`, when it logs one (`beta > 0`).

    A metric above its threshold (`thresholds={"length_spearman": 0.5, "held_out_drop": 0.5, ...}`) logs one warning
    the first time. With `plot_path`, the trajectories are drawn at the end of training. Reads the trainer's recent
    completions and rewards (`trainer._logs`, kept by TRL's GRPO and RLOO trainers for their completion tables).

    Args:
        trainer: the GRPOTrainer / RLOOTrainer the callback is added to.
        held_out (`Callable`, *optional*): a reward function in TRL's contract, scored but not trained on.
        thresholds (`Mapping[str, float]`, *optional*): warning thresholds by metric name (without `hacking/`).
        plot_path (`str`, *optional*): PNG written by `on_train_end`.
    """

    def __init__(self, trainer, held_out=None, thresholds: Mapping[str, float] | None = None, plot_path=None):
        self.trainer, self.held_out, self.plot_path = trainer, held_out, plot_path
        self.thresholds = dict(thresholds or {})
        self.history: list[dict[str, Any]] = []
        self._first_held_out: float | None = None
        self._warned: set[str] = set()

    def measure(self) -> dict[str, float | None]:
        from scipy.stats import spearmanr

        recent = self.trainer._logs
        completions, rewards = list(recent["completion"]), recent["rewards"]
        record: dict[str, float | None] = {}
        if completions and rewards:
            weights = self.trainer.reward_weights.tolist()
            columns = np.array([list(rewards[name]) for name in rewards], dtype=np.float64)
            total = np.nansum(columns * np.asarray(weights[: len(columns)])[:, None], axis=0)
            lengths = [
                len(c if isinstance(c, str) else "".join(str(m.get("content", "")) for m in c)) for c in completions
            ]
            constant = len(set(lengths)) < 2 or np.ptp(total) == 0
            record["length_spearman"] = None if constant else float(spearmanr(lengths, total).statistic)
        if self.held_out is not None and completions:
            scores = [
                s for s in self.held_out(prompts=list(recent["prompt"]), completions=completions) if s is not None
            ]
            if scores:
                record["held_out_reward"] = float(np.mean(scores))
                self._first_held_out = (
                    self._first_held_out if self._first_held_out is not None else record["held_out_reward"]
                )
                record["held_out_drop"] = self._first_held_out - record["held_out_reward"]
        return record

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs or not state.is_world_process_zero:
            return control
        record = self.measure()
        disagreement = [v for k, v in logs.items() if k.endswith("/disagreement")]
        if disagreement:
            record["disagreement"] = float(disagreement[0])
        if "kl" in logs:
            record["kl"] = float(logs["kl"])
        metrics = {f"hacking/{k}": v for k, v in record.items() if v is not None}
        logs.update(metrics)
        if state.log_history and state.log_history[-1] is not logs:
            state.log_history[-1].update(metrics)
        self.history.append({"step": state.global_step, **metrics})
        for name, limit in self.thresholds.items():
            value = record.get(name)
            if value is not None and value > limit and name not in self._warned:
                self._warned.add(name)
                logger.warning(
                    "reward hacking monitor: %s = %.3f at step %d exceeds %s", name, value, state.global_step, limit
                )
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.plot_path is not None and self.history and state.is_world_process_zero:
            from .evaluation.plots import plot_reward_trajectory

            keys = sorted({k for record in self.history for k in record if k != "step"})
            plot_reward_trajectory(self.history, self.plot_path, keys=keys, title="Reward-hacking instruments")
        return control
