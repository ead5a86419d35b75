"""The demo's closing summary: each stage's time, then every figure beside the baseline it must beat."""

from __future__ import annotations

from .demo_grpo import trajectory_line


def fmt(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "n/a"


def with_ci(value, ci) -> str:
    """`0.755 [0.700, 0.815]`, or the value alone without an interval."""
    return fmt(value) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")


def summary_rows(results: dict) -> list[tuple[str, float, str]]:
    """(stage, seconds, what it did) for the time table."""
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
        rows.append(("eval", timings["eval"], "held-out problems, figures below"))
    if "grpo" in results:
        grpo = results["grpo"]
        rows.append(("grpo", timings["grpo"], f"{grpo['steps']} steps of {grpo['completions_per_step']} completions"))
    return rows


def bt_figures(bt: dict) -> list[tuple[str, str, str]]:
    tie_rate = bt.get("length_tie_rate")
    ties = f", {fmt(100 * tie_rate, 0)}% of pairs tie, counted 0.5" if isinstance(tie_rate, int | float) else ""
    rows = [
        (
            f"BT pairwise accuracy ({bt['count']} pairs)",
            with_ci(bt["accuracy"], bt.get("accuracy_ci")),
            f"prefer the shorter {fmt(bt['length_baseline_accuracy'])}{ties}",
        )
    ]
    for kind, report in bt.get("kinds", {}).items():
        rows.append(
            (
                f"  rejected by {kind} ({report['count']})",
                with_ci(report["accuracy"], report.get("accuracy_ci")),
                "random 0.500",
            )
        )
    return rows


def prm_figures(prm: dict, aggregation: str) -> list[tuple[str, str, str]]:
    steps = prm["step_metrics"]
    rows = [
        (
            f"PRM bad-step F1 ({steps['n_steps']} steps)",
            with_ci(steps["bad_f1"], steps.get("bad_f1_ci")),
            f"majority class {fmt(steps.get('majority_f1', 0.0))}, all bad {fmt(steps.get('all_bad_f1'))}",
        ),
        (
            "PRM step accuracy",
            fmt(steps["step_accuracy"]),
            f"majority class {fmt(steps.get('majority_accuracy', 1 - steps['bad_step_rate']))}",
        ),
        (
            "PRM step AUROC",
            with_ci(steps.get("step_auroc"), steps.get("step_auroc_ci")),
            f"chance 0.500, step position alone {fmt(steps.get('position_auroc'))}",
        ),
    ]
    chosen = prm["solutions"].get(aggregation, {})
    rows.append((f"PRM solution AUROC ({aggregation})", fmt(chosen.get("auroc")), "chance 0.500"))
    if "pairs" in prm:
        pairs = prm["pairs"]
        rows.append(
            (
                f"PRM best-of-2 ({aggregation}, {pairs['n_problems']} problems)",
                with_ci(pairs["best_of_2"], pairs.get("best_of_2_ci")),
                f"random {fmt(pairs['random_pick'])}",
            )
        )
    elif "best_of_n" in chosen:
        rows.append(
            (f"PRM best-of-N ({aggregation})", fmt(chosen["best_of_n"]), f"random {fmt(chosen['random_pick'])}")
        )
    for kind, report in prm.get("kinds", {}).items():
        rows.append(
            (
                f"  {kind} ({report['n_solutions']}): best-of-2",
                with_ci(report["best_of_2"], report.get("best_of_2_ci")),
                f"random 0.500; first error caught {fmt(report['first_error_caught'])}, AUROC {fmt(report['auroc'])}",
            )
        )
    return rows


def grpo_figures(grpo: dict) -> list[tuple[str, str, str]]:
    rows = [
        (
            "GRPO truncated completions",
            fmt(grpo.get("truncated_share")),
            f"share hitting max_completion_length={grpo.get('max_completion_length')}",
        )
    ]
    # The ensemble's own reward is z-scored within each group (mean 0 by construction): its trend is its members'.
    for member in grpo["members"]:
        slope = (grpo.get("reward_slopes") or {}).get(member)
        if slope is None:
            rows.append((f"GRPO {member} raw reward", trajectory_line(grpo["history"], f"{member}/raw_mean"), ""))
            continue
        rows.append(
            (
                f"GRPO {member} reward slope / step",
                with_ci(slope["slope"], slope["slope_ci"]),
                f"0 = no trend; mean {fmt(slope['first'])} -> {fmt(slope['last'])} over {slope['n']} steps",
            )
        )
    return rows


def figure_rows(results: dict) -> list[tuple[str, str, str]]:
    """(figure, value with its 95% interval, baseline) for every held-out figure of the run."""
    rows = []
    if "eval_bt" in results:
        rows += bt_figures(results["eval_bt"])
    if "eval_prm" in results:
        rows += prm_figures(results["eval_prm"], results["arguments"]["prm_aggregation"])
    if "grpo" in results:
        rows += grpo_figures(results["grpo"])
    return rows


def print_figures(figures: list[tuple[str, str, str]]) -> None:
    """Prints (figure, value, baseline) rows as an aligned table."""
    width = max([len("figure")] + [len(name) for name, _, _ in figures])
    print(f"{'figure':<{width}}  {'value [95% CI]':<22}  baseline")
    for name, value, baseline in figures:
        print(f"{name:<{width}}  {value:<22}  {baseline}")


def print_summary(results: dict) -> None:
    print("\n=== summary ===")
    print(f"{'stage':<6} {'seconds':>8}  result")
    for stage, seconds, text in summary_rows(results):
        print(f"{stage:<6} {seconds:>8.1f}  {text}")
    print(f"{'total':<6} {results['timings']['total']:>8.1f}")
    figures = figure_rows(results)
    if figures:
        print()
        print_figures(figures)
