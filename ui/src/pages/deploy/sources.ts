// Model sources as this server offers them: the choices come from the server's own OpenAPI description
// (the enum of `source`), so a server that adds Hugging Face, ModelScope or the Ollama library shows
// them here without a change to the UI. Field names are upstream GPUStack's.

import { getOptional } from "../../api/http";
import type { Model } from "../../api/types";
import type { MessageKey } from "../../i18n/en";

export interface SourceField {
  name: string;
  label: MessageKey;
  placeholder: string;
  required: boolean;
}

export const SOURCE_FIELDS: Record<string, SourceField[]> = {
  local_path: [
    { name: "local_path", label: "deploy.localPath", placeholder: "/data/models/qwen2.5-0.5b-instruct-q4_k_m.gguf", required: true },
  ],
  huggingface: [
    { name: "huggingface_repo_id", label: "deploy.hfRepo", placeholder: "Qwen/Qwen2.5-0.5B-Instruct-GGUF", required: true },
    { name: "huggingface_filename", label: "deploy.hfFile", placeholder: "*q4_k_m.gguf", required: false },
  ],
  modelscope: [
    { name: "model_scope_model_id", label: "deploy.msModel", placeholder: "qwen/Qwen2.5-0.5B-Instruct-GGUF", required: true },
    { name: "model_scope_file_path", label: "deploy.msFile", placeholder: "*q4_k_m.gguf", required: false },
  ],
  ollama_library: [
    { name: "ollama_library_model_name", label: "deploy.ollamaName", placeholder: "qwen2.5:0.5b", required: true },
  ],
};

export const SOURCE_LABELS: Record<string, MessageKey> = {
  local_path: "deploy.source.local_path",
  huggingface: "deploy.source.huggingface",
  modelscope: "deploy.source.modelscope",
  ollama_library: "deploy.source.ollama_library",
};

export function sourceSummary(model: Model): string {
  for (const field of SOURCE_FIELDS[model.source] ?? []) {
    const value = model[field.name];
    if (typeof value === "string" && value) {
      const more = (SOURCE_FIELDS[model.source] ?? []).slice(1).map((f) => model[f.name]).filter(Boolean);
      return [value, ...more].join(" · ");
    }
  }
  return model.source;
}

interface OpenAPI {
  components?: { schemas?: Record<string, { enum?: unknown[]; properties?: Record<string, unknown> }> };
}

export interface ServerSchema {
  sources: string[];
  backends: string[];
  placementStrategies: string[];
  updatable: string[] | null; // the fields PUT /v2/models/{id} takes, when the server says
}

const FALLBACK: ServerSchema = {
  sources: ["local_path"],
  backends: ["llama-box", "vllm", "vox-box", "ascend-mindie"],
  placementStrategies: ["spread", "binpack"],
  updatable: null,
};

function enumContaining(spec: OpenAPI, value: string): string[] | null {
  for (const schema of Object.values(spec.components?.schemas ?? {})) {
    if (Array.isArray(schema.enum) && schema.enum.includes(value)) return schema.enum.map(String);
  }
  return null;
}

let cached: Promise<ServerSchema> | null = null;

export function serverSchema(): Promise<ServerSchema> {
  cached ??= getOptional<OpenAPI>("/openapi.json")
    .then((spec) => {
      if (!spec) return FALLBACK;
      const update = spec.components?.schemas?.ModelUpdate?.properties;
      return {
        sources: enumContaining(spec, "local_path") ?? FALLBACK.sources,
        backends: enumContaining(spec, "llama-box") ?? FALLBACK.backends,
        placementStrategies: enumContaining(spec, "binpack") ?? FALLBACK.placementStrategies,
        updatable: update ? Object.keys(update) : null,
      };
    })
    .catch(() => FALLBACK);
  return cached;
}

export interface BackendInfo {
  name: string;
  versions: string[];
  defaultVersion?: string;
  parameters: { flag: string; help: string }[];
}

/** GET /v2/backends, read leniently (a list, or {items}); null when the server has no such route. */
export async function backendCatalog(): Promise<BackendInfo[] | null> {
  const body = await getOptional<unknown>("/v2/backends").catch(() => null);
  if (body === null) return null;
  const rows: unknown[] = Array.isArray(body) ? body : ((body as { items?: unknown[] }).items ?? []);
  const merged = new Map<string, BackendInfo>();
  for (const raw of rows) {
    const row = raw as Record<string, unknown>;
    const name = String(row.backend ?? row.name ?? "");
    if (!name) continue;
    const info = merged.get(name) ?? { name, versions: [], parameters: [] };
    const versions = [row.versions, row.installed_versions, row.available_versions].flatMap((v) => (Array.isArray(v) ? v : []));
    for (const version of versions) {
      const text = typeof version === "string" ? version : String((version as { version?: string })?.version ?? "");
      if (text && !info.versions.includes(text)) info.versions.push(text);
    }
    const defaultVersion = row.default_version ?? row.default;
    if (typeof defaultVersion === "string") info.defaultVersion = defaultVersion;
    if (Array.isArray(row.parameters)) {
      for (const p of row.parameters) {
        if (typeof p === "string") info.parameters.push({ flag: p, help: "" });
        else if (p && typeof p === "object") info.parameters.push({ flag: String((p as { flag?: string }).flag ?? ""), help: String((p as { help?: string }).help ?? "") });
      }
    }
    merged.set(name, info);
  }
  return [...merged.values()];
}
