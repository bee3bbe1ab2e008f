"""Secrets never leave the process: redaction of config trees, override strings and console text.

Secrets belong in the environment (``method.icl.openai.api_key_env`` names the variable). A value
passed on the command line under a credential-like key (``*api_key*``, ``*token*``,
``*secret*``, ``*password*``) is still redacted wherever the harness writes it: the
``results.json`` config and overrides, the run directory name (moelora.harness.naming), Hydra's
``.hydra/*.yaml`` (moelora.harness.hydra_callbacks.RedactSecrets) and the console (``run.py`` wraps
stdout and stderr in :class:`RedactingStream`).

A key is credential-like when one of the ``_``/``-`` separated words of a dotted component is
``token``, ``secret(s)``, ``password``, ``passwd``, ``credential(s)`` or ``apikey``, or when
two consecutive words are ``api`` ``key``; a key ending in ``_env`` only *names* an
environment variable and is kept (``api_key_env``). Counts such as ``max_new_tokens`` are
not secrets.

Secrets also hide inside values (:func:`redact_value`): the userinfo of any URL
(``http://alice:pw@host/`` → ``http://***@host/``), secret-like query parameters
(``?api_key=…``, ``token``, ``key``, ``secret``, ``password``, ``sig``, … → ``***``) and
secret-like ``name=value`` parts of paths. :func:`redact` applies it to every string of a
config tree, :func:`redact_override` to every override, and :func:`secret_values` collects
such parts, so error messages and the console (:func:`redact_text`) mask them as well.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

MASK = "***"
_WORDS = {"token", "secret", "secrets", "password", "passwd", "credential", "credentials", "apikey"}
_MIN_TEXT_SECRET = 4  # shorter values are masked in structured places only, not in free text


def is_secret_key(key: str) -> bool:
    """Whether a (dotted) config key holds a credential (see the module docstring)."""
    parts = [p for p in re.split(r"[.@/]", str(key).lstrip("+~")) if p]
    if not parts or parts[-1].lower().endswith("_env"):
        return False
    for part in parts:
        words = [w for w in re.split(r"[_\-]", part.lower()) if w]
        if _WORDS & set(words):
            return True
        if any(a == "api" and b == "key" for a, b in zip(words, words[1:], strict=False)):
            return True
    return False


# Query parameter / path part names that carry credentials besides the words above.
_PARAM_WORDS = _WORDS | {"key", "sig", "signature", "auth", "pwd", "pass", "session", "jwt"}
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^/?#@\s]+)@")
_PARAM = re.compile(r"(?P<lead>[?&;/])(?P<name>[A-Za-z0-9_.\-]+)=(?P<value>[^&#;/\s'\"]+)")


def _secret_param(name: str) -> bool:
    words = [w for w in re.split(r"[_\-.]", name.lower()) if w]
    return (
        is_secret_key(name)
        or bool(_PARAM_WORDS & set(words))
        or name.lower() in {"x-amz-signature"}
    )


def url_secrets(text: str) -> list[str]:
    """The secret parts inside a value: URL userinfo (``user:password``, and the password
    alone) and the values of secret-like query parameters or ``name=value`` path parts."""
    found = []
    for m in _USERINFO.finditer(str(text)):
        found.append(m.group("user"))
        found += [p for p in m.group("user").split(":", 1)[1:] if p]
    for m in _PARAM.finditer(str(text)):
        if _secret_param(m.group("name")):
            found.append(m.group("value"))
    return found


def redact_value(text: str) -> str:
    """``text`` with URL userinfo and secret-like query parameters / path parts masked:
    ``http://alice:pw@h:9/v1?api_key=q`` → ``http://***@h:9/v1?api_key=***``."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", str(text))
    return _PARAM.sub(
        lambda m: (
            f"{m.group('lead')}{m.group('name')}={MASK}"
            if _secret_param(m.group("name"))
            else m.group(0)
        ),
        text,
    )


def redact_strings(obj: Any) -> Any:
    """A copy of a document with :func:`redact_value` applied to every string (keys kept:
    for records such as results.json, whose keys are not config keys)."""
    if isinstance(obj, dict):
        return {k: redact_strings(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_strings(v) for v in obj]
    return redact_value(obj) if isinstance(obj, str) else obj


def redact(obj: Any) -> Any:
    """A copy of a config tree with credential-like values replaced by ``"***"`` and the
    secrets inside every other string masked (:func:`redact_value`)."""
    if isinstance(obj, dict):
        return {
            k: (MASK if is_secret_key(str(k)) and v not in (None, "") else redact(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_value(obj)
    return obj


def split_override(item: str) -> tuple[str, str]:
    """``"+a.b=1"`` → ``("+a.b", "1")`` (a bare ``~key`` has an empty value)."""
    key, _, value = str(item).partition("=")
    return key, value


def redact_override(item: str) -> str:
    """``"+logger.api_key=sk-1"`` → ``"+logger.api_key=***"``; secrets inside other values
    masked (:func:`redact_value`); other overrides unchanged."""
    key, value = split_override(item)
    if value and is_secret_key(key):
        return f"{key}={MASK}"
    masked = redact_value(value)
    return f"{key}={masked}" if masked != value else str(item)


def secret_values(overrides: Iterable[str]) -> list[str]:
    """The values given to credential-like keys in ``overrides`` (sweep items one by one)."""
    values: list[str] = []
    for item in overrides:
        key, value = split_override(item)
        values += url_secrets(value)
        if not value or not is_secret_key(key):
            continue
        values.append(value)
        try:
            from hydra.core.override_parser.overrides_parser import OverridesParser

            (parsed,) = OverridesParser.create().parse_overrides([str(item)])
            if parsed.is_sweep_override():
                values += [str(v) for v in parsed.sweep_string_iterator()]
            else:
                values.append(str(parsed.value()))
        except Exception:  # noqa: BLE001 - an unparsable item is masked as written
            pass
    return sorted({v for v in values if v}, key=len, reverse=True)


def redact_text(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret value of at least 4 characters replaced by ``"***"``."""
    for value in secrets:
        if len(value) >= _MIN_TEXT_SECRET:
            text = text.replace(value, MASK)
    return text


class RedactingStream:
    """A text stream that masks known secret values before writing to ``stream``.

    Writes are buffered up to the next line end (``\\n`` or ``\\r``), so a secret split across
    two ``write`` calls is still masked; ``flush`` writes what is pending."""

    def __init__(self, stream: TextIO, secrets: Sequence[str]) -> None:
        self._stream = stream
        self._secrets = [s for s in secrets if len(s) >= _MIN_TEXT_SECRET]
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        end = max(self._pending.rfind("\n"), self._pending.rfind("\r")) + 1
        if end:
            head, self._pending = self._pending[:end], self._pending[end:]
            self._stream.write(redact_text(head, self._secrets))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(redact_text(self._pending, self._secrets))
            self._pending = ""
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
