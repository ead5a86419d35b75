"""`trl-rewards train bt|prm|orm|attr|pairwise`: parse the trainer's config (flags and YAML), load data and model,
train, save.

Order matters for a user's time: options, the checkpoint to resume, the output folder and every data row are checked
before any model loads; the run is seeded before the model loads (a new reward head is initialized then), so one
seed gives one result; `--resume_from_checkpoint` resumes exactly (weights, optimizer, scheduler, data order, RNG).
The trainers and TRL's parser are imported inside each command, so `trl-rewards --help` stays light.
"""

from __future__ import annotations

import functools
import json
import logging
import os

from transformers import set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..data.attributes import validate_attribute_rows
from ..data.loading import has_split
from ..data.outcome import validate_outcome_rows
from ..data.pairwise import validate_pairwise_rows
from ..data.preference import validate_preference_rows
from ..data.stepwise import validate_stepwise_rows
from ..modeling import PRM_HEADS, load_process_reward_model, load_reward_model, reward_peft_config
from .arguments import DatasetArguments
from .inputs import InputError, check_output_dir, check_rows, read_split

logger = logging.getLogger(__name__)


def _load_splits(data_args, validate):
    """Train and eval splits, each read with errors naming the file and checked row by row (`validate`) before any
    model loads; a broken eval file says it is the eval file."""
    if data_args.dataset_name is None:
        raise InputError("--dataset_name is required (a local file, a saved dataset folder or a Hub name)")
    name = data_args.dataset_name
    train = read_split(
        name, data_args.dataset_train_split, data_args.dataset_config, data_args.max_train_samples, "train data"
    )
    check_rows(validate, train, "train data", name)
    eval_name = data_args.eval_dataset_name
    if eval_name is None and has_split(name, data_args.dataset_test_split, data_args.dataset_config):
        eval_name = name
    if eval_name is None:
        return train, None
    eval_dataset = read_split(
        eval_name, data_args.dataset_test_split, data_args.dataset_config, data_args.max_eval_samples, "eval data"
    )
    check_rows(validate, eval_dataset, "eval data", eval_name)
    return train, eval_dataset


def resolve_checkpoint(value: str | None, output_dir: str) -> str | None:
    """
    The checkpoint `--resume_from_checkpoint` names: a checkpoint folder (it must hold `trainer_state.json`), or
    `true` / `last` for the newest `checkpoint-*` in `output_dir`. Checked before anything loads.
    """
    if value is None or str(value).lower() in ("false", "none", ""):
        return None
    if str(value).lower() in ("true", "last"):
        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            raise InputError(f"--resume_from_checkpoint {value}: {output_dir!r} holds no checkpoint-* folder")
        return last
    if not os.path.isfile(os.path.join(value, "trainer_state.json")):
        raise InputError(
            f"--resume_from_checkpoint {value!r} is not a checkpoint folder (no trainer_state.json); pass a "
            "checkpoint-N folder, or `true` for the last one in --output_dir"
        )
    return value


def _parse(config_cls, kind: str, argv: list[str], validate, validate_with_config: bool = False):
    """`(training_args, model_args, train_dataset, eval_dataset)` of `train <kind>`. Everything that can be checked
    without a model is checked first (options, checkpoint, output folder, every data row); then the run is seeded, so
    that a head initialized at load time is the same in every run with this seed. With `validate_with_config`,
    `validate(rows, config=training_args)` is called (rows whose columns a config field names, e.g. `train attr`)."""
    from trl import ModelConfig, TrlParser

    parser = TrlParser(
        (DatasetArguments, config_cls, ModelConfig), prog=f"trl-rewards train {kind}", allow_abbrev=False
    )
    data_args, training_args, model_args = parser.parse_args_and_config(argv)
    if model_args.model_name_or_path is None:
        raise InputError("--model_name_or_path is required")
    training_args.resume_from_checkpoint = resolve_checkpoint(
        training_args.resume_from_checkpoint, training_args.output_dir
    )
    check_output_dir(training_args.output_dir)
    if validate_with_config:
        validate = functools.partial(validate, config=training_args)
    splits = _load_splits(data_args, validate)
    set_seed(training_args.seed)
    return training_args, model_args, *splits


def _load_kwargs(training_args) -> dict:
    """`from_pretrained` options the trainer config carries (TRL's `model_init_kwargs`, `trust_remote_code`)."""
    kwargs = dict(getattr(training_args, "model_init_kwargs", None) or {})
    if getattr(training_args, "trust_remote_code", False):
        kwargs["trust_remote_code"] = True
    return kwargs


def _train_and_save(trainer_cls, model, tokenizer, training_args, train_dataset, eval_dataset, peft_config) -> dict:
    trainer = trainer_cls(
        model=model.train(),
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is not None:
        with open(os.path.join(checkpoint, "trainer_state.json")) as f:
            step = json.load(f)["global_step"]
        logger.info("resuming from %s (step %d)", checkpoint, step)
        print(f"resuming from {checkpoint} at step {step}", flush=True)
    trainer.train(resume_from_checkpoint=checkpoint)
    if trainer.state.global_step == 0:
        raise InputError(
            "training ran 0 steps (check --num_train_epochs / --max_steps against the dataset size); nothing saved"
        )
    results = trainer.evaluate() if eval_dataset is not None else {}
    trainer.save_model(training_args.output_dir)
    for name, report in trainer.length_reports.items():
        logger.info(report.message(name))
    logger.info("saved to %s; eval: %s", training_args.output_dir, results)
    return results


def train_bt(argv: list[str]) -> dict:
    """`train bt`: preference pairs -> a Bradley-Terry reward model; returns the final eval metrics."""
    from ..trainers.bt_config import BradleyTerryConfig
    from ..trainers.bt_trainer import BradleyTerryTrainer

    args, model_args, train_dataset, eval_dataset = _parse(BradleyTerryConfig, "bt", argv, validate_preference_rows)
    model, tokenizer = load_reward_model(model_args.model_name_or_path, model_args=model_args, **_load_kwargs(args))
    peft_config = reward_peft_config(model_args, head="sequence")
    return _train_and_save(BradleyTerryTrainer, model, tokenizer, args, train_dataset, eval_dataset, peft_config)


def train_prm(argv: list[str]) -> dict:
    """`train prm`: stepwise rows `{"prompt", "completions", "labels"}` -> a process reward model."""
    from ..trainers.prm_config import ProcessRewardConfig
    from ..trainers.prm_trainer import ProcessRewardTrainer

    args, model_args, train_dataset, eval_dataset = _parse(ProcessRewardConfig, "prm", argv, validate_stepwise_rows)
    style = args.model_style
    model, tokenizer = load_process_reward_model(
        model_args.model_name_or_path, style, model_args=model_args, **_load_kwargs(args)
    )
    peft_config = reward_peft_config(model_args, head=PRM_HEADS[style])
    return _train_and_save(ProcessRewardTrainer, model, tokenizer, args, train_dataset, eval_dataset, peft_config)


def train_orm(argv: list[str]) -> dict:
    """`train orm`: outcome rows `{"prompt", "completion", "label"}` -> an outcome reward model."""
    from ..trainers.orm_config import OutcomeRewardConfig
    from ..trainers.orm_trainer import OutcomeRewardTrainer

    args, model_args, train_dataset, eval_dataset = _parse(OutcomeRewardConfig, "orm", argv, validate_outcome_rows)
    model, tokenizer = load_reward_model(model_args.model_name_or_path, model_args=model_args, **_load_kwargs(args))
    peft_config = reward_peft_config(model_args, head="sequence")
    return _train_and_save(OutcomeRewardTrainer, model, tokenizer, args, train_dataset, eval_dataset, peft_config)


def _validate_attribute_rows(rows, config) -> None:
    validate_attribute_rows(rows, config.attributes)


def train_attr(argv: list[str]) -> dict:
    """`train attr`: rated rows `{"prompt", "completion", <attribute>: rating}` -> a multi-attribute reward model."""
    from ..trainers.attr_config import AttributeRewardConfig
    from ..trainers.attr_trainer import AttributeRewardTrainer

    args, model_args, train_dataset, eval_dataset = _parse(
        AttributeRewardConfig, "attr", argv, _validate_attribute_rows, validate_with_config=True
    )
    model, tokenizer = load_reward_model(
        model_args.model_name_or_path, model_args=model_args, num_labels=len(args.attributes), **_load_kwargs(args)
    )
    peft_config = reward_peft_config(model_args, head="sequence")
    return _train_and_save(AttributeRewardTrainer, model, tokenizer, args, train_dataset, eval_dataset, peft_config)


def train_pairwise(argv: list[str]) -> dict:
    """`train pairwise`: preference pairs -> a pairwise preference model reading both responses (P(A ≻ B))."""
    from ..trainers.pairwise_config import PairwisePreferenceConfig
    from ..trainers.pairwise_trainer import PairwisePreferenceTrainer

    args, model_args, train_dataset, eval_dataset = _parse(
        PairwisePreferenceConfig, "pairwise", argv, validate_pairwise_rows
    )
    model, tokenizer = load_reward_model(model_args.model_name_or_path, model_args=model_args, **_load_kwargs(args))
    peft_config = reward_peft_config(model_args, head="sequence")
    return _train_and_save(PairwisePreferenceTrainer, model, tokenizer, args, train_dataset, eval_dataset, peft_config)
