"""Command-line scripts: `trl-rewards` (cli.py) and its commands train, eval/score, merge, configs and demo."""
