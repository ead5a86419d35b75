"""`trl-rewards train bt|prm|orm`: parse the trainer's config (flags and YAML), load data and model, train, save.

The trainers and TRL's parser are imported inside each command, so `trl-rewards --help` and the other commands do
not load the Trainer stack.
"""

from __future__ import annotations

import logging

from ..data.loading import has_split, load_table
from ..modeling import PRM_HEADS, load_process_reward_model, load_reward_model, reward_peft_config
from .arguments import DatasetArguments

logger = logging.getLogger(__name__)


def _load_splits(data_args, model_args=None):
    if data_args.dataset_name is None:
        raise SystemExit("error: --dataset_name is required (a local file, a saved dataset folder or a Hub name)")
    train = load_table(
        data_args.dataset_name, data_args.dataset_train_split, data_args.dataset_config, data_args.max_train_samples
    )
    eval_dataset = None
    if data_args.eval_dataset_name is not None:
        eval_dataset = load_table(
            data_args.eval_dataset_name,
            data_args.dataset_test_split,
            data_args.dataset_config,
            data_args.max_eval_samples,
        )
    elif has_split(data_args.dataset_name, data_args.dataset_test_split, data_args.dataset_config):
        eval_dataset = load_table(
            data_args.dataset_name, data_args.dataset_test_split, data_args.dataset_config, data_args.max_eval_samples
        )
    return train, eval_dataset


def _parse(config_cls, kind: str, argv: list[str]):
    """`(training_args, model_args, train_dataset, eval_dataset)` of `train <kind>`; the data loads before any model,
    so a wrong path fails first."""
    from trl import ModelConfig, TrlParser

    parser = TrlParser((DatasetArguments, config_cls, ModelConfig), prog=f"trl-rewards train {kind}")
    data_args, training_args, model_args = parser.parse_args_and_config(argv)
    if model_args.model_name_or_path is None:
        raise SystemExit("error: --model_name_or_path is required")
    return training_args, model_args, *_load_splits(data_args)


def _train_and_save(trainer_cls, model, tokenizer, training_args, train_dataset, eval_dataset, peft_config) -> dict:
    trainer = trainer_cls(
        model=model.train(),
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train()
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

    args, model_args, train_dataset, eval_dataset = _parse(BradleyTerryConfig, "bt", argv)
    model, tokenizer = load_reward_model(model_args.model_name_or_path, model_args=model_args)
    peft_config = reward_peft_config(model_args, head="sequence")
    return _train_and_save(BradleyTerryTrainer, model, tokenizer, args, train_dataset, eval_dataset, peft_config)


def train_prm(argv: list[str]) -> dict:
    """`train prm`: stepwise rows `{"prompt", "completions", "labels"}` -> a process reward model."""
    from ..trainers.prm_config import ProcessRewardConfig
    from ..trainers.prm_trainer import ProcessRewardTrainer

    args, model_args, train_dataset, eval_dataset = _parse(ProcessRewardConfig, "prm", argv)
    style = args.model_style
    model, tokenizer = load_process_reward_model(model_args.model_name_or_path, style, model_args=model_args)
    peft_config = reward_peft_config(model_args, head=PRM_HEADS[style])
    return _train_and_save(ProcessRewardTrainer, model, tokenizer, args, train_dataset, eval_dataset, peft_config)


def train_orm(argv: list[str]) -> dict:
    """`train orm`: outcome rows `{"prompt", "completion", "label"}` -> an outcome reward model."""
    from ..trainers.orm_config import OutcomeRewardConfig
    from ..trainers.orm_trainer import OutcomeRewardTrainer

    args, model_args, train_dataset, eval_dataset = _parse(OutcomeRewardConfig, "orm", argv)
    model, tokenizer = load_reward_model(model_args.model_name_or_path, model_args=model_args)
    peft_config = reward_peft_config(model_args, head="sequence")
    return _train_and_save(OutcomeRewardTrainer, model, tokenizer, args, train_dataset, eval_dataset, peft_config)
