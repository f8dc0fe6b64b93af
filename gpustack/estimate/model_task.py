"""What a Hugging Face model folder is for (generation, embeddings or scoring), from its config.json, as
vLLM decides it when no --runner/--convert/--task says otherwise.

vLLM's `--runner auto` picks the generative runner for architectures with a language-model head
(`*ForCausalLM`, `*ForConditionalGeneration`, `*LMHeadModel`) and the pooling runner for the rest: a bare
encoder (`BertModel`, `XLMRobertaModel`, ...) becomes an embedding model, a `*ForSequenceClassification`
a classifier/cross-encoder that scores pairs. Sentence-transformers' modules.json marks an embedding model
whose architecture alone would not say so.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Any


class ModelTask(str, Enum):
    GENERATE = "generate"
    EMBED = "embed"
    SCORE = "score"  # cross-encoders and rerankers


_GENERATIVE_SUFFIXES = ("ForCausalLM", "ForConditionalGeneration", "LMHeadModel", "ForTextGeneration")
_SCORE_SUFFIXES = ("ForSequenceClassification", "ForTokenClassification")
_EMBED_SUFFIXES = ("Model", "ForMaskedLM", "EmbeddingModel")
SENTENCE_TRANSFORMERS_FILES = frozenset({"modules.json", "config_sentence_transformers.json"})
# Encoder-only families: vLLM keeps no KV cache for them (their attention is not causal).
ENCODER_MODEL_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "nomic_bert", "modernbert", "distilbert", "electra", "deberta-v2"}
)


def architectures(config: dict[str, Any]) -> list[str]:
    found = config.get("architectures")
    return [str(name) for name in found] if isinstance(found, list) else []


def model_task(config: dict[str, Any], file_names: Iterable[str] = ()) -> ModelTask:
    """What vLLM serves this model as by default (see the module's docstring)."""
    names = architectures(config)
    if any(name.endswith(_GENERATIVE_SUFFIXES) for name in names):
        return ModelTask.GENERATE
    if any(name.endswith(_SCORE_SUFFIXES) for name in names):
        return ModelTask.SCORE
    if any(name.endswith(_EMBED_SUFFIXES) for name in names):
        return ModelTask.EMBED
    if SENTENCE_TRANSFORMERS_FILES & set(file_names):
        return ModelTask.EMBED
    return ModelTask.GENERATE  # no architecture named: vLLM tries a generative model


def encoder_only(config: dict[str, Any]) -> bool:
    """A bare encoder (BERT and kin): no KV cache, whatever the engine is told to set aside."""
    return str(config.get("model_type", "")).lower() in ENCODER_MODEL_TYPES
