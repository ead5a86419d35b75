"""The demo's closing table: one line per stage with its time and key figures."""

from __future__ import annotations

from .demo_grpo import trajectory_line


def fmt(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "n/a"


def summary_rows(results: dict) -> list[tuple[str, float, str]]:
    """(stage, seconds, key figures) for the final table."""
    timings = results["timings"]
    rows = [("data", timings["data"], results["data"])]
    if "bt" in results:
        log = results["bt"]["last_train_log"]
        rows.append(
            ("bt", timings["bt"], f"{results['bt']['train_pairs']} pairs, last train acc {fmt(log.get('accuracy'))}")
        )
    if "prm" in results:
        log = results["prm"]["last_train_log"]
        rows.append(
            (
                "prm",
                timings["prm"],
                f"{results['prm']['train_solutions']} solutions, last train step acc {fmt(log.get('step_accuracy'))}",
            )
        )
    if "eval" in timings:
        parts = []
        if "eval_bt" in results:
            bt = results["eval_bt"]
            ci = bt.get("accuracy_ci") or [None, None]
            parts.append(
                f"BT pair acc {fmt(bt['accuracy'])} [{fmt(ci[0])}, {fmt(ci[1])}], length baseline "
                f"{fmt(bt['length_baseline_accuracy'])}, ECE {fmt(bt['ece'])}"
            )
        if "eval_prm" in results:
            prm = results["eval_prm"]
            steps, chosen = prm["step_metrics"], prm["solutions"][results["arguments"]["prm_aggregation"]]
            parts.append(
                f"PRM step acc {fmt(steps['step_accuracy'])} (majority {fmt(1 - steps['bad_step_rate'])}), "
                f"bad-step F1 {fmt(steps['bad_f1'])}, "
                f"best-of-N ({results['arguments']['prm_aggregation']}) {fmt(chosen.get('best_of_n'))} vs random "
                f"{fmt(chosen.get('random_pick'))}"
            )
        rows.append(("eval", timings["eval"], "; ".join(parts)))
    if "grpo" in results:
        history = results["grpo"]["history"]
        parts = [f"{m}: {trajectory_line(history, f'{m}/raw_mean')}" for m in results["grpo"]["members"]]
        rows.append(("grpo", timings["grpo"], f"{results['grpo']['steps']} steps; " + "; ".join(parts)))
    return rows


def print_summary(results: dict) -> None:
    rows = summary_rows(results)
    print("\n=== summary ===")
    print(f"{'stage':<6} {'seconds':>8}  result")
    for stage, seconds, text in rows:
        print(f"{stage:<6} {seconds:>8.1f}  {text}")
    print(f"{'total':<6} {results['timings']['total']:>8.1f}")
