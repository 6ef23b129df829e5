"""Command lines for Windows' two shells, each quoted by that shell's own rules.

A Windows program receives one command line and splits it itself; Python does so by the C
runtime's rules, which :func:`subprocess.list2cmdline` writes. The shell that Windows' OpenSSH
server runs (``cmd.exe /c`` or PowerShell) reads that line first, by rules of its own:

cmd.exe expands ``%name%`` everywhere, inside double quotes too, and treats ``& | < > ( ) ^``
as operators outside them (and ``!name!`` where delayed expansion is on). A caret before a
character makes cmd take it literally, and a caret before ``"`` keeps cmd from entering a quoted
stretch, so every argument's line is passed with a caret before each of those characters: cmd
sees no quotes, removes each caret, and hands on exactly the C runtime's line. A ``%`` then
always starts a name that ends in ``^`` (``%x^%``), which is never defined, and a command line
leaves an undefined ``%name%`` as it is. The program itself must be one word to cmd, so it is
put in real double quotes instead (a file name holds no ``"``), where ``%`` alone cannot be
kept from expansion: a program path with ``%`` is refused.

PowerShell takes a single-quoted string literally, except for the quotes that end it: ASCII
``'`` and the typographic U+2018, U+2019, U+201A and U+201B. Doubling each of them is the whole
rule. ``-EncodedCommand`` (base64 UTF-16LE) would avoid quoting, but only by starting a second
``powershell.exe`` under the SSH server's one: another process between the worker and its
session, and another pipeline that the worker's output would pass through.
"""

from __future__ import annotations

import subprocess

from ..errors import ConfigError

__all__ = ["cmd_line", "powershell_line"]

#: What cmd.exe treats specially outside double quotes (``!`` only with delayed expansion on).
_CMD_SPECIAL = frozenset('()%!^"<>&|')
#: The quote characters that open and close a PowerShell single-quoted string.
_PS_QUOTES = frozenset("'\u2018\u2019\u201a\u201b")
#: No Windows shell passes these inside an argument (cmd ends the command at a line break).
_CONTROL = frozenset("\0\r\n")


def _check_words(argv: list[str], shell: str) -> None:
    for word in argv:
        if _CONTROL & set(word):
            raise ConfigError(f"{shell} cannot pass an argument with a line break or NUL in it: {word!r}")


def cmd_line(argv: list[str], *, delayed_expansion: bool = False) -> str:
    """``argv`` as a cmd.exe command line that starts ``argv[0]`` with exactly ``argv[1:]``.

    ``delayed_expansion``: the PC's cmd expands ``!name!`` (its registry turns it on), which no
    quoting survives; an argument with ``!`` is then refused.
    """
    _check_words(argv, "cmd.exe")
    program, *args = argv
    if not program or '"' in program or "%" in program:
        raise ConfigError(
            f"cmd.exe cannot start the program {program!r}: a program path with '%' or '\"' (or none) "
            "cannot be quoted for it; move the interpreter to a path without them"
        )
    if delayed_expansion:
        for word in argv:
            if "!" in word:
                raise ConfigError(
                    f"cmd.exe on this PC expands !names! (delayed expansion is on in its registry), so "
                    f"the argument {word!r} cannot be passed; rename it, or make PowerShell the PC's "
                    "OpenSSH DefaultShell"
                )
    quoted = f'"{program}"' if set(program) & (_CMD_SPECIAL | {" ", "\t"}) else program
    if not args:
        return quoted
    line = subprocess.list2cmdline(args)
    return quoted + " " + "".join("^" + c if c in _CMD_SPECIAL else c for c in line)


def _ps_quote(word: str) -> str:
    return "'" + "".join(c + c if c in _PS_QUOTES else c for c in word) + "'"


def powershell_line(argv: list[str]) -> str:
    """``argv`` as a PowerShell call of ``argv[0]`` with ``argv[1:]``, each word a literal string."""
    _check_words(argv, "PowerShell")
    return "& " + " ".join(_ps_quote(w) for w in argv)
