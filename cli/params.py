"""Params files: the same flags as the command line, kept in a file.

A params file holds flags, one or more per line, shell-style quoting, ``#`` comments and blank
lines; ``--params-file FILE`` may appear inside one (relative to the including file). Every
command of the tool reads them the same way, through :func:`expand_argv`.
"""
from __future__ import annotations

import os
from pathlib import Path

from common.exits import UsageError  # noqa: F401 (raised here; imported from here by cli)


def tokenize_params_line(line: str) -> list[str]:
    """Split one params-file line into words, shell-style.

    Words are separated by whitespace; single or double quotes group words (``--plot "My
    title" both dir``); a ``#`` that starts a word outside quotes begins a comment that runs to
    the end of the line (so ``a#b`` is one word, ``a #b`` is ``a`` plus a comment).

    Raises
    ------
    UsageError
        An unclosed quote.
    """
    words: list[str] = []
    cur: list[str] = []
    in_word = False
    quote = ""
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote == '"' and i + 1 < len(line) and line[i + 1] in '"\\':
                i += 1
                cur.append(line[i])
            else:
                cur.append(ch)
        elif ch in "\"'":
            quote, in_word = ch, True
        elif ch.isspace():
            if in_word:
                words.append("".join(cur))
                cur, in_word = [], False
        elif ch == "#" and not in_word:
            break
        else:
            cur.append(ch)
            in_word = True
        i += 1
    if quote:
        raise UsageError(f"unclosed {quote} quote in params line: {line.strip()!r}")
    if in_word:
        words.append("".join(cur))
    return words


def read_params_file(path: str | os.PathLike, *, _chain: tuple[str, ...] = ()) -> list[str]:
    """The flags of a params file as a token list; nested ``--params-file`` lines are expanded.

    Raises
    ------
    UsageError
        The file is missing or unreadable, or includes itself (directly or through others).
    """
    real = os.path.realpath(path)
    if real in _chain:
        cycle = " -> ".join([*_chain, real])
        raise UsageError(f"params file {str(path)!r} includes itself ({cycle})")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"params file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read params file {str(path)!r}: {exc}") from None
    tokens: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            words = tokenize_params_line(line)
        except UsageError as exc:
            raise UsageError(f"{path}:{number}: {exc}") from None
        tokens.extend(words)
    return _expand_params_files(tokens, base_dir=os.path.dirname(real), chain=(*_chain, real))


def _expand_params_files(tokens: list[str], *, base_dir: str | None = None,
                         chain: tuple[str, ...] = ()) -> list[str]:
    """Replace every ``--params-file FILE`` by the file's tokens (relative to ``base_dir``)."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "--params-file" or tok.startswith("--params-file="):
            if "=" in tok:
                target = tok.split("=", 1)[1]
                i += 1
            else:
                if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                    raise UsageError("--params-file needs a file name")
                target = tokens[i + 1]
                i += 2
            if base_dir and not os.path.isabs(target) and not os.path.exists(target):
                candidate = os.path.join(base_dir, target)
                target = candidate if os.path.exists(candidate) else target
            out.extend(read_params_file(target, _chain=chain))
            continue
        out.append(tok)
        i += 1
    return out


def expand_argv(argv: list[str]) -> list[str]:
    """Params-file flags first, then the command line's own flags, so the command line wins."""
    from_files: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--params-file" or tok.startswith("--params-file="):
            if "=" in tok:
                from_files.extend(_expand_params_files([tok]))
                i += 1
            else:
                from_files.extend(_expand_params_files(argv[i:i + 2]))
                i += 2
            continue
        rest.append(tok)
        i += 1
    return from_files + rest
