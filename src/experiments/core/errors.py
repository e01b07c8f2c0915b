"""One kind of error for every mistake a user can make in a config or on the command line.

Entry points catch :class:`UserError` (and the models' and datasets' own ``ValueError`` subclasses)
and print the message as one paragraph, with no traceback, then exit with status 2. Set
``HYDRA_FULL_ERROR=1`` to see the traceback anyway.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

T = TypeVar("T")

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A configuration or input mistake: the message names the key, the value and the fix."""

    def __init__(self, key: str, value: object, problem: str, fix: str) -> None:
        self.key, self.value = key, value
        super().__init__(f"{key}={value!r}: {problem} {fix}")


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types whose message is meant for the user, imported lazily (they pull in torch)."""
    from data.errors import DataConfigError
    from models.errors import ModelConfigError

    return (UserError, ModelConfigError, DataConfigError)


def report(error: BaseException, stream=None) -> None:
    stream = stream or sys.stderr
    text = " ".join(str(error).split())
    print(textwrap.fill(f"Error: {text}", width=100), file=stream)


def exits_cleanly_on_user_error(func: Callable[..., T]) -> Callable[..., T]:
    """Turn a user error raised by ``func`` into one paragraph on stderr and exit status 2."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as error:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or not isinstance(error, user_error_types()):
                raise
            report(error)
            sys.exit(EXIT_USER_ERROR)

    return wrapper


def instantiate_or_explain(cfg: Any, group: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that reports a failure as a user error naming the config group."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, user_error_types()):
            raise cause from None
        target = cfg.get("_target_", "?")
        detail = " ".join(str(cause or error).split())
        raise UserError(
            group, target, f"could not be built: {detail}.",
            f"Check the keys under `{group}` (python -m experiments.train --cfg job shows them).",
        ) from None
