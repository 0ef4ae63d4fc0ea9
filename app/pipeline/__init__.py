"""The staged pipeline: frame slots, latest-frame queues, stage threads, runner, metrics."""
