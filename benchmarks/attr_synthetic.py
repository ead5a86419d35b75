"""Multi-attribute reward model on synthetic attributes from the demo's generator, on CPU (issue #16).

No HelpSteer2 copy is available offline, so the attributes are built from the demo's verifiable arithmetic problems
(`data.synthetic.build_synthetic_datasets`): each problem has a correct solution and one with a single injected error.
Every solution gets two ratings on HelpSteer2's 0-4 scale:

- `correctness`: 4 if the solution is correct, else 0 (exact: the generator knows);
- `verbosity`: the quintile (0-4) of the solution's length in characters, quintile edges taken on the train split.

`--missing` of the train rows lose their verbosity rating (None), so the masked loss runs on real rows. An
`AttributeRewardTrainer` trains the MiniLM encoder (bottom `--freeze_layers` layers frozen, as in the demo) and the
held-out solutions are scored with `AttributeScorer`: per-attribute Spearman (with a bootstrap interval), MAE and,
for correctness, AUROC; each beside trivial baselines (solution length as the score; a constant at the train mean
for MAE). The held-out preference pairs (correct vs corrupted solution of one problem) are scored with the combined
reward for three weightings, beside the length baseline; then ArmoRM's stage 2 (`fit_gating_from_pairs`, verbosity
de-biased) is fitted on the train pairs and scored on the held-out pairs. Figures are on the test split only; no
hyperparameter was chosen on it (the defaults are the demo's).

    nice -n 10 .venv/bin/python benchmarks/attr_synthetic.py
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import sys
import time

import numpy as np
from scipy import stats

from trl_rewards.data.synthetic import build_synthetic_datasets
from trl_rewards.evaluation.attribute_metrics import combined_pairwise_accuracy
from trl_rewards.evaluation.pairwise_report import bootstrap_ci
from trl_rewards.evaluation.verifier_metrics import binary_auroc
from trl_rewards.inference.attribute_scoring import AttributeScorer
from trl_rewards.modeling import load_reward_model
from trl_rewards.rewards.attribute_rewards import fit_gating_from_pairs
from trl_rewards.scripts.demo_stages import default_encoder_path, freeze_bottom_layers
from trl_rewards.trainers.attr_config import AttributeRewardConfig
from trl_rewards.trainers.attr_trainer import AttributeRewardTrainer

ATTRIBUTES = ["correctness", "verbosity"]


def attribute_rows(outcome, edges, missing: float = 0.0, seed: int = 0):
    """Outcome rows -> attribute rows: correctness 4/0 from the label, verbosity = length quintile (0-4)."""
    rng = random.Random(seed)
    rows = []
    for row in outcome:
        verbosity = float(np.searchsorted(edges, len(row["completion"]), side="right"))
        rows.append(
            {
                "prompt": row["prompt"],
                "completion": row["completion"],
                "correctness": 4.0 if row["label"] else 0.0,
                "verbosity": None if rng.random() < missing else verbosity,
            }
        )
    return rows


def _spearman(x, y) -> float:
    return float(stats.spearmanr(x, y)[0])


def _interval(statistic, *samples) -> str:
    low, high = bootstrap_ci(statistic, *samples, n_resamples=1000)
    return f"[{low:.3f}, {high:.3f}]"


def _pair_accuracy(chosen, rejected) -> float:
    return float(np.mean((chosen > rejected) + 0.5 * (chosen == rejected)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n_train", type=int, default=600, help="training problems (2 solutions each)")
    parser.add_argument("--n_test", type=int, default=200, help="held-out problems")
    parser.add_argument("--missing", type=float, default=0.2, help="share of train verbosity ratings removed")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--learning_rate", type=float, default=3e-4)
    parser.add_argument("--freeze_layers", type=int, default=4)
    parser.add_argument("--output_dir", default="runs/attr-synthetic")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    start = time.time()
    data = build_synthetic_datasets(n_train=args.n_train, n_test=args.n_test, seed=0)
    lengths = [len(c) for c in data["outcome_train"]["completion"]]
    edges = np.quantile(lengths, [0.2, 0.4, 0.6, 0.8])
    train = attribute_rows(data["outcome_train"], edges, args.missing, seed=1)
    test = attribute_rows(data["outcome_test"], edges)

    from datasets import Dataset

    model, tokenizer = load_reward_model(default_encoder_path(), num_labels=len(ATTRIBUTES))
    freeze_bottom_layers(model, args.freeze_layers)
    config = AttributeRewardConfig(
        output_dir=args.output_dir,
        attributes=ATTRIBUTES,
        attribute_weights=[1.0, 0.0],
        num_train_epochs=args.epochs,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        learning_rate=args.learning_rate,
        warmup_steps=0.1,
        logging_steps=50,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        gradient_checkpointing=False,
        train_sampling_strategy="group_by_length",
        max_length=256,
        seed=0,
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )
    pref_test = data["preference_test"].remove_columns("error_type")
    trainer = AttributeRewardTrainer(
        model=model.train(),
        args=config,
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(test),
        processing_class=tokenizer,
        preference_eval_dataset=pref_test,
    )
    trainer.train()
    train_seconds = time.time() - start
    logged = trainer.evaluate()

    scorer = AttributeScorer(trainer.model, tokenizer, batch_size=64)
    prompts, completions = [r["prompt"] for r in test], [r["completion"] for r in test]
    scores = scorer.score_attributes(prompts, completions)
    length = np.array([len(c) for c in completions], dtype=float)
    rows = []
    for k, name in enumerate(ATTRIBUTES):
        ratings = np.array([r[name] for r in test], dtype=float)
        mean = np.nanmean([np.nan if r[name] is None else r[name] for r in train])
        rows.append(
            (
                name,
                f"{_spearman(scores[:, k], ratings):.3f} {_interval(_spearman, scores[:, k], ratings)}",
                f"{_spearman(length, ratings):.3f}",
                f"{np.mean(np.abs(scores[:, k] - ratings)):.3f}",
                f"{np.mean(np.abs(mean - ratings)):.3f}",
            )
        )
    correct = np.array([r["correctness"] > 0 for r in test])
    auroc = binary_auroc(scores[:, 0], correct)
    auroc_ci = _interval(lambda s, y: binary_auroc(s, y.astype(bool)), scores[:, 0], correct.astype(float))

    pref = data["preference_test"]
    chosen = scorer.score_attributes(pref["prompt"], pref["chosen"])
    rejected = scorer.score_attributes(pref["prompt"], pref["rejected"])
    pair_rows = []
    for label, weights in (("correctness only [1, 0]", [1.0, 0.0]), ("mean [0.5, 0.5]", [0.5, 0.5])):
        c, r = chosen @ weights, rejected @ weights
        acc = combined_pairwise_accuracy(chosen, rejected, weights)["pairwise_accuracy"]
        pair_rows.append((label, f"{acc:.3f} {_interval(_pair_accuracy, c, r)}"))
    c_len = np.array([len(x) for x in pref["chosen"]], float)
    r_len = np.array([len(x) for x in pref["rejected"]], float)
    pair_rows.append(("baseline: longer wins", f"{_pair_accuracy(c_len, r_len):.3f}"))
    pair_rows.append(("baseline: shorter wins", f"{_pair_accuracy(-c_len, -r_len):.3f}"))

    gating_start = time.time()
    pref_train = data["preference_train"]
    gating = fit_gating_from_pairs(
        scorer, pref_train["prompt"], pref_train["chosen"], pref_train["rejected"], verbosity="verbosity", epochs=50
    )
    with torch.no_grad():
        embeddings = torch.as_tensor(scorer.embed_prompts(pref["prompt"]))
        gc = gating(embeddings, torch.as_tensor(chosen)).numpy()
        gr = gating(embeddings, torch.as_tensor(rejected)).numpy()
        mean_weights = gating.weights(embeddings.float()).mean(0).tolist()
    pair_rows.append(
        ("ArmoRM gating (verbosity de-biased)", f"{_pair_accuracy(gc, gr):.3f} {_interval(_pair_accuracy, gc, gr)}")
    )
    gating_seconds = time.time() - gating_start

    print(f"\ncommand: {shlex.join([sys.executable, *sys.argv])}")
    print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}; 1 torch thread")
    print(
        f"train: {len(train)} solutions ({args.n_train} problems), "
        f"test: {len(test)} solutions ({args.n_test} problems)"
    )
    print(f"training + data: {train_seconds:.0f} s; gating fit (scores + embeddings + fit): {gating_seconds:.0f} s\n")
    print("| attribute | Spearman [95% CI] | length baseline Spearman | MAE | constant (train mean) MAE |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\ncorrectness AUROC: {auroc:.3f} {auroc_ci}")
    print(
        f"trainer's eval log: pairwise_accuracy {logged['eval_pairwise_accuracy']:.3f}, "
        f"correctness/spearman {logged['eval_correctness/spearman']:.3f}, verbosity/spearman "
        f"{logged['eval_verbosity/spearman']:.3f}\n"
    )
    print(f"| combined reward on {len(pref)} held-out pairs (correct vs corrupted) | pairwise accuracy [95% CI] |")
    print("|---|---|")
    for row in pair_rows:
        print("| " + " | ".join(row) + " |")
    named = dict(zip(ATTRIBUTES, [round(w, 3) for w in mean_weights], strict=True))
    print(f"\ngating: mean weights over test prompts {named}, verbosity λ {gating.debias.tolist()}")


if __name__ == "__main__":
    main()
