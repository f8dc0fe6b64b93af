// The OpenAI-compatible API as the playground uses it: the model list, streamed chat, embeddings, and the
// equivalent code a user can copy.

import { get, send } from "../../api/http";

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

export interface ChatSettings {
  model: string;
  system: string;
  temperature: number;
  max_tokens: number | null;
  top_p: number;
}

export async function listModels(): Promise<string[]> {
  const body = await get<{ data?: { id: string }[] }>("/v1/models");
  return (body.data ?? []).map((m) => m.id).sort();
}

export function chatBody(settings: ChatSettings, history: ChatMessage[], stream: boolean) {
  const messages = [...(settings.system.trim() ? [{ role: "system", content: settings.system }] : []), ...history];
  return {
    model: settings.model,
    messages,
    temperature: settings.temperature,
    top_p: settings.top_p,
    ...(settings.max_tokens ? { max_tokens: settings.max_tokens } : {}),
    stream,
  };
}

export interface StreamStats {
  chunks: number;
  firstTokenMs: number | null;
  totalMs: number;
  usage?: { prompt_tokens: number; completion_tokens: number };
}

/** Stream a chat completion (server-sent events), calling `onText` with each piece of the answer. */
export async function streamChat(
  settings: ChatSettings,
  history: ChatMessage[],
  onText: (text: string) => void,
  signal: AbortSignal,
): Promise<StreamStats> {
  const started = performance.now();
  const response = await send("POST", "/v1/chat/completions", chatBody(settings, history, true), { signal });
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  const stats: StreamStats = { chunks: 0, firstTokenMs: null, totalMs: 0 };
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let newline: number;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") continue;
      const event = JSON.parse(data);
      if (event.error) throw new Error(event.error.message ?? JSON.stringify(event.error));
      if (event.usage) stats.usage = event.usage;
      const text: string = event.choices?.[0]?.delta?.content ?? "";
      if (text) {
        stats.chunks += 1;
        stats.firstTokenMs ??= performance.now() - started;
        onText(text);
      }
    }
  }
  stats.totalMs = performance.now() - started;
  return stats;
}

const origin = () => window.location.origin;

export function curlCode(path: string, body: unknown): string {
  const json = JSON.stringify(body, null, 2).replace(/'/g, "'\\''");
  return `curl ${origin()}/v1/${path} \\\n  -H "Content-Type: application/json" \\\n  -H "Authorization: Bearer $GPUSTACK_API_KEY" \\\n  -d '${json}'`;
}

function python(value: unknown): string {
  // JSON's strings and numbers read the same in Python; its literals do not.
  return JSON.stringify(value, null, 4)
    .replace(/\btrue\b/g, "True")
    .replace(/\bfalse\b/g, "False")
    .replace(/\bnull\b/g, "None");
}

export function pythonChatCode(settings: ChatSettings, history: ChatMessage[]): string {
  const body = chatBody(settings, history, true);
  const extra = settings.max_tokens ? `\n    max_tokens=${settings.max_tokens},` : "";
  return `import os

from openai import OpenAI

client = OpenAI(base_url="${origin()}/v1", api_key=os.environ["GPUSTACK_API_KEY"])

stream = client.chat.completions.create(
    model=${JSON.stringify(settings.model)},
    messages=${python(body.messages).replace(/\n/g, "\n    ")},
    temperature=${settings.temperature},
    top_p=${settings.top_p},${extra}
    stream=True,
)
for chunk in stream:
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
`;
}

export function pythonEmbeddingsCode(model: string, inputs: string[]): string {
  return `import os

from openai import OpenAI

client = OpenAI(base_url="${origin()}/v1", api_key=os.environ["GPUSTACK_API_KEY"])

response = client.embeddings.create(
    model=${JSON.stringify(model)},
    input=${python(inputs).replace(/\n/g, "\n    ")},
)
for item in response.data:
    print(item.index, len(item.embedding), item.embedding[:4])
`;
}
