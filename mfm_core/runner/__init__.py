"""The runner: assemble a pipeline from a config, train, checkpoint, evaluate, draw."""
