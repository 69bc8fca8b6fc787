"""The built-in toy CLIP's trainer (cir/assets/toy): `python -m training.toy.model`, `python -m training.toy.report`.

Modules: arch (tokenizer, image processor, CLIPModel sizes), data (the in-memory render pool and
its shape-contrast batches), checkpoint (resume, atomic package write), model (the training run),
report (the evaluation on a fresh shapes world). The loss and the LR schedule are the TAT job's
(training.loss, training.runtime); CIRR loading, Recall@K and the modality gap are cir.benchmarks'.
"""
