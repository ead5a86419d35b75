"""Trainers: subclasses of TRL's that override only what differs."""

from .bt import BradleyTerryTrainer

__all__ = ["BradleyTerryTrainer"]
