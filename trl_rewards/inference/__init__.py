"""Inference: scoring `(prompt, completion)` with a reward model, solutions step by step with a PRM, aggregating step
scores, and the one length-sorted micro-batcher they share."""
