"""Models of how Windows reads a command line, written from Microsoft's documentation, for the
quoting tests (there is no Windows host here): cmd.exe's percent expansion and its special
characters, the C runtime's argv splitting (what python.exe does), PowerShell's single quotes.

The cmd model is the stricter reading wherever the documentation leaves room: an undefined
``%name%`` is kept and scanning resumes just after its first ``%`` (so the second one may start
another name), and any unescaped ``& | < >`` outside quotes breaks the command.
"""

from __future__ import annotations

PS_QUOTES = "'\u2018\u2019\u201a\u201b"


class BrokenCommand(AssertionError):
    """cmd would have run something other than one command."""


def cmd_expand_percent(line: str, env: dict[str, str]) -> str:
    """cmd's first phase on a command line: ``%name%`` of a defined variable becomes its value."""
    out, i = [], 0
    upper = {k.upper(): v for k, v in env.items()}
    while i < len(line):
        if line[i] == "%":
            end = line.find("%", i + 1)
            if end != -1 and line[i + 1 : end].upper() in upper:
                out.append(upper[line[i + 1 : end].upper()])
                i = end + 1
                continue
        out.append(line[i])
        i += 1
    return "".join(out)


def cmd_special_chars(line: str) -> str:
    """cmd's second phase: carets and quotes; the line the program is started with."""
    out, i, quoted = [], 0, False
    while i < len(line):
        c = line[i]
        if c == '"':
            quoted = not quoted
        elif not quoted and c == "^":
            i += 1
            if i < len(line):
                out.append(line[i])
            i += 1
            continue
        elif not quoted and c in "&|<>":
            raise BrokenCommand(f"cmd would take {c!r} at {i} of {line!r} as an operator")
        out.append(c)
        i += 1
    return "".join(out)


def cmd_program_and_rest(line: str) -> tuple[str, str]:
    """The program cmd starts (its first word, quotes removed) and the rest of the line."""
    if line.startswith('"'):
        end = line.index('"', 1)
        return line[1:end], line[end + 1 :].removeprefix(" ")
    program, _, rest = line.partition(" ")
    return program, rest


def msvcrt_argv(line: str) -> list[str]:
    """The C runtime's split of a command line (after the program name) into arguments."""
    args: list[str] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            return args
        arg, quoted = [], False
        while i < n and (quoted or line[i] not in " \t"):
            if line[i] == "\\":
                start = i
                while i < n and line[i] == "\\":
                    i += 1
                count = i - start
                if i < n and line[i] == '"':
                    arg.append("\\" * (count // 2))
                    if count % 2:
                        arg.append('"')
                        i += 1
                else:
                    arg.append("\\" * count)
                continue
            if line[i] == '"':
                if quoted and i + 1 < n and line[i + 1] == '"':
                    arg.append('"')
                    i += 2
                    continue
                quoted = not quoted
                i += 1
                continue
            arg.append(line[i])
            i += 1
        args.append("".join(arg))


def through_cmd(line: str, env: dict[str, str]) -> list[str]:
    """The argv python.exe gets when cmd.exe (delayed expansion off) runs ``line``."""
    program, rest = cmd_program_and_rest(cmd_special_chars(cmd_expand_percent(line, env)))
    return [program, *msvcrt_argv(rest)]


def powershell_words(line: str) -> list[str]:
    """The strings of ``& 'a' 'b' ...``: a single-quoted string ends at any of the five quote
    characters, and two of them in a row are the second one, literally."""
    assert line.startswith("& "), line
    words, i = [], 2
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        assert line[i] in PS_QUOTES, f"not a quoted string at {i} of {line!r}"
        i += 1
        word = []
        while True:
            assert i < len(line), f"unterminated string in {line!r}"
            c = line[i]
            if c in PS_QUOTES:
                if i + 1 < len(line) and line[i + 1] in PS_QUOTES:
                    word.append(line[i + 1])
                    i += 2
                    continue
                i += 1
                break
            word.append(c)
            i += 1
        words.append("".join(word))
        assert i >= len(line) or line[i] == " ", f"a string of {line!r} ends inside a word, at {i}"
    return words
