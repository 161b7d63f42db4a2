"""Registered commands: how each is called, with what, and with which defaults."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .errors import InvalidJobError, UnknownCommandError

CommandFunc = Callable[..., Any]


@dataclass(frozen=True)
class Command:
    """A function registered with ``@jobs.command``, and its defaults for the jobs it runs."""

    name: str
    func: CommandFunc
    worker: str | None = None
    retry_limit: int | None = None
    timeout: float | None = None

    @cached_property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)

    @cached_property
    def takes_request(self) -> bool:
        return _request_parameter(self.func) is not None

    @cached_property
    def request_class(self) -> type | None:
        """The dataclass the request is built into, if the parameter is annotated with one."""
        parameter = _request_parameter(self.func)
        if parameter is None:
            return None
        try:
            hints = typing.get_type_hints(self.func)
        except Exception:  # unresolvable annotations: pass the JSON value as it is
            return None
        hint = hints.get(parameter.name)
        return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None

    def build_request(self, value: Any) -> Any:
        """Turn the stored JSON request into the argument the function expects."""
        cls = self.request_class
        if cls is None or value is None or isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise InvalidJobError(
                f"command {self.name!r} takes a {cls.__name__}; its request must be a JSON "
                f"object, not {type(value).__name__}"
            )
        try:
            return cls(**value)
        except TypeError as error:
            raise InvalidJobError(
                f"request does not fit {cls.__name__} of command {self.name!r}: {error}"
            ) from None

    def call(self, request: Any) -> Any:
        """Call the function (a coroutine object comes back for async commands)."""
        if self.takes_request:
            return self.func(self.build_request(request))
        return self.func()


def _request_parameter(func: CommandFunc) -> inspect.Parameter | None:
    parameters = [
        p
        for p in inspect.signature(func).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return parameters[0] if parameters else None


def check_signature(func: CommandFunc) -> None:
    """Refuse functions that cannot be called with zero or one argument (the request)."""
    required = [
        p.name
        for p in inspect.signature(func).parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if len(required) > 1 or any(
        p.kind is p.KEYWORD_ONLY and p.default is p.empty
        for p in inspect.signature(func).parameters.values()
    ):
        raise TypeError(
            f"a command takes zero or one argument (its request); {func.__qualname__} requires "
            f"{', '.join(required)}"
        )


class CommandRegistry:
    """The commands of one :class:`~flask_bgjobs.BackgroundJobs`, by name."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def add(self, command: Command) -> Command:
        existing = self._commands.get(command.name)
        if existing is not None and existing.func is not command.func:
            raise ValueError(
                f"a command named {command.name!r} is already registered "
                f"({existing.func.__module__}.{existing.func.__qualname__}); pass name= to "
                "register this one under another name"
            )
        self._commands[command.name] = command
        return command

    def get(self, name: str) -> Command:
        try:
            return self._commands[name]
        except KeyError:
            known = ", ".join(sorted(self._commands)) or "none"
            raise UnknownCommandError(
                f"unknown command {name!r}; registered commands: {known}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._commands

    def __iter__(self) -> Iterator[Command]:
        return iter(self._commands.values())

    def workers(self) -> set[str]:
        """The named workers that commands default to."""
        return {c.worker for c in self._commands.values() if c.worker is not None}
