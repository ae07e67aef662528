"""Training and evaluation of one model: `Baseline`, its backbones, metrics and evaluation, the probe, budgets and
callbacks, packed training's engine, what a run writes, and Lightning's private names.
"""
