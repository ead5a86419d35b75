"""Trainers: subclasses of TRL's that override only what differs (all need trl>=1.16)."""

from .bt import BradleyTerryTrainer
from .outcome import OutcomeRewardTrainer
from .process import ProcessRewardTrainer

__all__ = ["BradleyTerryTrainer", "OutcomeRewardTrainer", "ProcessRewardTrainer"]
