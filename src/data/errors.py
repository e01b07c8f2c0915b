"""The error every dataset raises for a setting or a file it cannot use."""


class DataConfigError(ValueError):
    """A data setting or file is unusable: the message names the key, the value and the fix."""

    def __init__(self, key: str, value: object, problem: str, fix: str) -> None:
        self.key, self.value = key, value
        super().__init__(f"data.{key}={value!r}: {problem} {fix}")
