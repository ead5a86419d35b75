"""Trainers: `<kind>_config.py` beside `<kind>_trainer.py` for Bradley-Terry (bt), outcome (orm) and process (prm)
reward models, subclasses of TRL's that override only what differs (all need trl>=1.16); `base.py` holds what they
share (exact metric buffering), `base_config.py` the config fields they share."""
