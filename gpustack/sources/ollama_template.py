"""The Ollama library's chat templates (Go's text/template over .Messages) as the Jinja that llama.cpp's
server reads (--chat-template-file). Pure.

What converts: `range .Messages` (also `range $i, $_ := .Messages`), `.Role`, `.Content`, `.System`,
`if`/`else if`/`else`/`end` over fields, `eq`/`ne`/`and`/`or`/`not` and string literals, `$last` in the
form Ollama's templates use (`$last := eq (len (slice $.Messages $i)) 1`), and the `{{-`/`-}}` trimming.
Anything else (tools, .Prompt/.Response legacy templates, other functions) returns None: the model then
runs with the template inside its GGUF, which llama.cpp uses by default.
"""

from __future__ import annotations

import json
import re

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\(|\)|[^\s()]+')
_LAST = re.compile(r"^\$last\s*:=\s*eq\s*\(len\s*\(slice\s+\$\.Messages\s+\$\w+\)\)\s*1$")
_RANGE = re.compile(r"^range\s+(?:\$\w+\s*,\s*\$\w+\s*:=\s*)?\$?\.Messages$")


class Unsupported(ValueError):
    """The template uses something outside the converted subset."""


def _field(token: str, in_loop: bool) -> str:
    name = token.removeprefix("$")
    if name in (".Role", ".Content") and in_loop and not token.startswith("$"):
        return f"message['{name[1:].lower()}']"
    if name == ".System":
        return "ns.system"
    if token == "$last" and in_loop:
        return "loop.last"
    raise Unsupported(token)


def _expression(tokens: list[str], in_loop: bool) -> str:
    """A Go pipeline of fields, literals and eq/ne/and/or/not, as a Jinja expression."""
    position = 0

    def operand() -> str:
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "(":
            inner = call()
            if tokens[position] != ")":
                raise Unsupported("parenthesis")
            position += 1
            return f"({inner})"
        if token.startswith('"'):
            return json.dumps(json.loads(token))
        return _field(token, in_loop)

    def call() -> str:
        nonlocal position
        head = tokens[position]
        if head in ("eq", "ne", "and", "or", "not"):
            position += 1
            args = []
            while position < len(tokens) and tokens[position] != ")":
                args.append(operand())
            if head == "not" and len(args) == 1:
                return f"not {args[0]}"
            if head in ("eq", "ne") and len(args) == 2:
                return f"{args[0]} {'==' if head == 'eq' else '!='} {args[1]}"
            if head in ("and", "or") and len(args) >= 2:
                return f" {head} ".join(args)
            raise Unsupported(head)
        return operand()

    result = call()
    if position != len(tokens):
        raise Unsupported(" ".join(tokens))
    return result


def _text(text: str) -> str:
    """Literal text, kept literal where Jinja would read it as a tag."""
    if any(mark in text for mark in ("{{", "{%", "{#")):
        return "{% raw %}" + text + "{% endraw %}"
    return text


def to_jinja(template: str, system: str = "") -> str | None:
    """The Jinja equivalent of an Ollama chat template, or None when it uses more than the subset."""
    try:
        return _convert(template, system)
    except (Unsupported, IndexError, ValueError):
        return None


def _convert(template: str, system: str) -> str:
    # Ollama's .System: the request's system message, else the model's own (its system layer).
    out = [
        f"{{%- set ns = namespace(system={json.dumps(system)}) -%}}"
        "{%- for m in messages -%}{%- if m['role'] == 'system' -%}{%- set ns.system = m['content'] -%}"
        "{%- endif -%}{%- endfor -%}"
    ]
    blocks: list[str] = []  # "for" or "if"
    position = 0
    for match in _ACTION.finditer(template):
        out.append(_text(template[position : match.start()]))
        position = match.end()
        left, body, right = match.group(1), match.group(2).strip(), match.group(3)
        jinja_left, jinja_right = ("-" if left else ""), ("-" if right else "")
        in_loop = "for" in blocks
        if body.startswith("/*") or _LAST.match(body):
            statement = "set _ = none"  # a comment, or $last (which is loop.last): nothing but the trimming
        elif _RANGE.match(body):
            blocks.append("for")
            statement = "for message in messages"
        elif body.startswith("if "):
            blocks.append("if")
            statement = "if " + _expression(_TOKEN.findall(body[3:]), in_loop)
        elif body.startswith("else if "):
            statement = "elif " + _expression(_TOKEN.findall(body[8:]), in_loop)
        elif body == "else":
            statement = "else"
        elif body == "end":
            statement = "end" + blocks.pop()
        else:
            expression = _expression(_TOKEN.findall(body), in_loop)
            out.append(f"{{{{{jinja_left} {expression} {jinja_right}}}}}")
            continue
        out.append(f"{{%{jinja_left} {statement} {jinja_right}%}}")
    if blocks:
        raise Unsupported("unclosed block")
    out.append(_text(template[position:]))
    if "for message in messages" not in "".join(out):
        raise Unsupported("a template without .Messages")
    return "".join(out)
