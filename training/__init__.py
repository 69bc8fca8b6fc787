"""Training jobs: Text-Anchored Tuning (`cir train`, `python -m training`) and the toy-model trainer.

TAT API: `training.config.TrainConfig`, `training.loop.train(cfg) -> TrainResult`,
`training.cli.main(argv)`. Kept import-free so `python -m training.toy.model` pays for nothing else.
"""
