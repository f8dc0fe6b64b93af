"""The Ollama library's Go chat templates as the Jinja llama.cpp's server reads; what does not convert is
left to the template inside the GGUF."""

from __future__ import annotations

from gpustack.sources.ollama_template import to_jinja

CHATML = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
# Ollama's llama3.2 template, without its tool calling.
LLAMA3 = """{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>

{{ .Content }}{{ if not $last }}<|eot_id|>{{ end }}
{{- end }}
{{- end }}"""

PREFIX = (
    '{%- set ns = namespace(system="You are SmolLM.") -%}'
    "{%- for m in messages -%}{%- if m['role'] == 'system' -%}{%- set ns.system = m['content'] -%}"
    "{%- endif -%}{%- endfor -%}"
)


def test_a_chatml_template_becomes_a_loop_over_the_messages() -> None:
    assert to_jinja(CHATML, "You are SmolLM.") == PREFIX + (
        "{%- for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
        "<|im_end|>\n{% endfor %}<|im_start|>assistant\n"
    )


def test_conditions_on_roles_last_and_system_convert() -> None:
    jinja = to_jinja(LLAMA3, "You are SmolLM.")
    assert jinja is not None and jinja.startswith(PREFIX)
    body = jinja[len(PREFIX) :]
    assert body.startswith("{%- if ns.system %}<|start_header_id|>system<|end_header_id|>\n\n{{ ns.system }}")
    assert "{%- if message['role'] == \"user\" %}" in body
    assert "{% if loop.last %}<|start_header_id|>assistant" in body
    assert (
        "{%- elif message['role'] == \"assistant\" %}" in body and "{% if not loop.last %}<|eot_id|>" in body
    )
    assert body.endswith("{%- endif %}\n{%- endfor %}")


def test_templates_beyond_the_subset_are_left_to_the_gguf() -> None:
    assert to_jinja("{{ .Prompt }}") is None  # a legacy prompt template
    assert to_jinja("{{ range .Messages }}{{ .ToolCalls }}{{ end }}") is None
    assert to_jinja("{{ range .Messages }}{{ json .Content }}{{ end }}") is None
    assert to_jinja("{{ range .Messages }}{{ .Content }}") is None  # not closed
    assert to_jinja("{{ range .Messages }}{%raw {{ .Content }}{{ end }}").count("{% raw %}") == 1  # type: ignore[union-attr]
