// Each engine's common flags, suggested while typing a backend parameter. A server that lists its
// backends' flags (GET /v2/backends, `parameters`) adds to these.

export interface Flag {
  flag: string; // what is inserted: "--ctx-size=" for a flag that takes a value
  help: string;
}

export const COMMON_FLAGS: Record<string, Flag[]> = {
  "llama-box": [
    { flag: "--ctx-size=", help: "context size in tokens (default 8192), shared by --parallel slots" },
    { flag: "--parallel=", help: "parallel sequences (default 4): each request gets ctx-size/parallel tokens" },
    { flag: "--n-gpu-layers=", help: "layers offloaded to GPUs (999: all)" },
    { flag: "--threads=", help: "CPU threads for generation" },
    { flag: "--threads-batch=", help: "CPU threads for prompt processing" },
    { flag: "--batch-size=", help: "logical batch size" },
    { flag: "--ubatch-size=", help: "physical batch size" },
    { flag: "--flash-attn", help: "flash attention" },
    { flag: "--cache-type-k=", help: "KV cache type for K (f16, q8_0, q4_0)" },
    { flag: "--cache-type-v=", help: "KV cache type for V (f16, q8_0, q4_0)" },
    { flag: "--jinja", help: "use the model's Jinja chat template (tool calls)" },
    { flag: "--chat-template=", help: "a built-in chat template by name" },
    { flag: "--embeddings", help: "serve /v1/embeddings" },
    { flag: "--reranking", help: "serve /v1/rerank" },
    { flag: "--pooling=", help: "pooling for embeddings (mean, cls, last)" },
    { flag: "--seed=", help: "random seed" },
    { flag: "--temp=", help: "default temperature" },
    { flag: "--split-mode=", help: "how to split across GPUs (layer, row, none)" },
    { flag: "--tensor-split=", help: "fraction of the model per GPU, e.g. 3,1" },
    { flag: "--main-gpu=", help: "GPU for small tensors and scratch" },
    { flag: "--no-mmap", help: "load the whole model into memory" },
    { flag: "--mlock", help: "keep the model in RAM" },
    { flag: "--rope-scaling=", help: "RoPE scaling (none, linear, yarn)" },
    { flag: "--verbose", help: "detailed engine logs" },
  ],
  vllm: [
    { flag: "--max-model-len=", help: "context length (default 8192 when the model allows more)" },
    { flag: "--gpu-memory-utilization=", help: "fraction of each GPU vLLM takes (default 0.9)" },
    { flag: "--tensor-parallel-size=", help: "GPUs per replica" },
    { flag: "--pipeline-parallel-size=", help: "pipeline stages" },
    { flag: "--max-num-seqs=", help: "concurrent sequences" },
    { flag: "--max-num-batched-tokens=", help: "tokens per batch" },
    { flag: "--dtype=", help: "auto, half, bfloat16, float16, float32" },
    { flag: "--quantization=", help: "awq, gptq, fp8, ..." },
    { flag: "--kv-cache-dtype=", help: "auto, fp8" },
    { flag: "--enforce-eager", help: "no CUDA graphs (less memory, slower)" },
    { flag: "--trust-remote-code", help: "run the model repository's own code" },
    { flag: "--enable-prefix-caching", help: "reuse KV cache across requests" },
    { flag: "--enable-chunked-prefill", help: "chunked prefill" },
    { flag: "--chat-template=", help: "chat template file" },
    { flag: "--enable-auto-tool-choice", help: "tool calls" },
    { flag: "--tool-call-parser=", help: "hermes, llama3_json, mistral, ..." },
    { flag: "--served-model-name=", help: "name the engine answers to" },
    { flag: "--seed=", help: "random seed" },
  ],
  "vox-box": [
    { flag: "--device=", help: "cpu or cuda" },
    { flag: "--verbose", help: "detailed engine logs" },
  ],
  "ascend-mindie": [
    { flag: "--max-seq-len=", help: "context length (default 8192)" },
    { flag: "--max-input-token-len=", help: "longest prompt" },
    { flag: "--npu-memory-fraction=", help: "fraction of each NPU" },
    { flag: "--trust-remote-code", help: "run the model repository's own code" },
  ],
};

export const COMMON_ENV: Record<string, string[]> = {
  "llama-box": ["LLAMA_ARG_THREADS", "GGML_CUDA_ENABLE_UNIFIED_MEMORY"],
  vllm: ["VLLM_LOGGING_LEVEL", "VLLM_USE_V1", "VLLM_ATTENTION_BACKEND", "HF_HUB_OFFLINE"],
  "vox-box": [],
  "ascend-mindie": ["ASCEND_RT_VISIBLE_DEVICES"],
};
