"""The one exception type of checkpoint loading, so command-line tools can catch it."""


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded as a LISA model.

    The message names the file (or the key in it) and the problem: malformed JSON, a
    config value of the wrong type or range, a corrupt or non-float weight file, a
    path that leaves the checkpoint folder, tensors that contradict config.json, or
    weights that are not finite.
    """
