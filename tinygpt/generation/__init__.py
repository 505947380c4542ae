"""Generation, torch only: the decoders and logits processors, the token loop, the compiled step,
and the text API the TinyGPT notebook calls (``generate(model, "To be", 200)``)."""

from tinygpt.generation.loop import generate_ids, intra_op_threads
from tinygpt.generation.sampling import (
    DECODERS,
    Decoder,
    filter_logits,
    make_generator,
    named_decoder,
)
from tinygpt.generation.text import (
    generate,
    generate_greedy,
    generate_nucleus,
    generate_temperature,
    generate_top_k,
    generateV2,
    stream_generate,
)

__all__ = [
    "DECODERS",
    "Decoder",
    "filter_logits",
    "generate",
    "generateV2",
    "generate_greedy",
    "generate_ids",
    "generate_nucleus",
    "generate_temperature",
    "generate_top_k",
    "intra_op_threads",
    "make_generator",
    "named_decoder",
    "stream_generate",
]
