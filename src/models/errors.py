"""The error every model raises for a configuration it cannot build.

It subclasses ``ValueError`` so plain Python users can catch it without knowing this package, and the
command-line entry points turn it into one readable paragraph instead of a traceback.
"""


class ModelConfigError(ValueError):
    """A model argument is invalid: the message names the key, the value and the fix."""

    def __init__(self, key: str, value: object, problem: str, fix: str) -> None:
        self.key, self.value = key, value
        super().__init__(f"model.{key}={value!r}: {problem} {fix}")


def require_positive_int(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelConfigError(key, value, "must be a positive integer.", f"Set model.{key} to e.g. 10.")
    return value


def require_io(in_channels: object, num_classes: object, input_size: object = None) -> None:
    """What every family checks first: its input channels, its classes and, unless it checks a minimum
    size of its own (:func:`require_min_input_size`), its input side, each a positive integer."""
    require_positive_int("in_channels", in_channels)
    require_positive_int("num_classes", num_classes)
    if input_size is not None:
        require_positive_int("input_size", input_size)


def require_choice(key: str, value: object, choices: "list | tuple | dict") -> object:
    if value not in choices:
        valid = ", ".join(str(c) for c in choices)
        raise ModelConfigError(key, value, f"is not one of the valid values ({valid}).", f"Use one of: {valid}.")
    return value


def require_probability(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ModelConfigError(key, value, "must be a probability in [0, 1).", f"Set model.{key}=0.5, for example.")
    return float(value)


def require_min_input_size(model: str, input_size: object, minimum: int, native: int) -> int:
    """Refuse an image smaller than ``minimum`` with the ``data.image_size`` the model needs."""
    require_positive_int("input_size", input_size)
    if input_size < minimum:
        raise ModelConfigError(
            "input_size", input_size,
            f"is too small for {model}: its convolutions and poolings need at least {minimum}x{minimum} pixels.",
            f"Set data.image_size to at least {minimum} (the paper's input is {native}x{native}).",
        )
    return input_size
