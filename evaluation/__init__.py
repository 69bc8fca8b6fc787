"""`cir eval`: score a model (optionally with a TAT adapter) on CIRR, CIRCO, FashionIQ or the shapes world."""
