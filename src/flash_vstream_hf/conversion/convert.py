"""`flash-vstream convert`: the official checkpoint (original LLaVA-style layout) -> this project's format.

    flash-vstream convert --input IVGSZ/Flash-VStream-7b --output flash-vstream-7b-hf

Weights stream through one input shard at a time into output shards, so peak memory stays near the largest
input shard (plus one output shard when the dtype changes). The output folder holds the config
(`retrieval_mode="original"`), sharded safetensors, the processor (tokenizer with `<video>`, CLIP preprocessing,
vicuna_v1 chat template) and the generation config.

Everything is written into a hidden staging folder next to the output (`.NAME.converting-PID-XXXXXX`), renamed
to the output once complete, so an interrupted conversion never leaves an output folder that loads as if it were
complete. A conversion that fails removes its staging folder; one that is killed leaves it behind, and the next
conversion into the same output names it in a note (it is not deleted then: another conversion may own it).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers.utils import logging

from ..commands.arguments import byte_size, text
from .export_hub import add_upload_arguments, check_repo_id, export_hub, push_to_hub
from .mapping import KeyPlan, build_config, check_supported, plan_keys
from .original_checkpoint import OriginalCheckpoint, resolve_input
from .tokenizer import build_tokenizer
from .vision_tower import load_vision_config, load_vision_tower, vision_config_from_shapes, vision_shape_keys
from .writer import ShardedSafetensorsWriter

DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
          "float32": torch.float32, "fp32": torch.float32}  # fmt: skip
EMBEDDINGS = ("model.language_model.embed_tokens.weight", "lm_head.weight")
ORIGINAL_EMBEDDINGS = "model.embed_tokens.weight"
ORIGINAL_LM_HEAD = "lm_head.weight"
STAGING_INFIX = ".converting-"
ORIGINAL_ATTENTION_QUERY = "model.attention_model.q_proj.weight"
VOCAB_MULTIPLE = 64  # tensor-core friendly; also what bitsandbytes' CPU kernels need
# Sampling settings of the original generation_config.json that only apply with do_sample=True (see below).
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "typical_p")


@dataclass
class ConversionReport:
    """What a conversion did. `dropped` maps each reason to the original keys dropped for it."""

    output: Path
    vision_source: str
    dtype: torch.dtype
    original_vocab_size: int
    vocab_size: int
    video_token_id: int
    tensors_written: int = 0
    bytes_written: int = 0
    shards: list[str] = field(default_factory=list)
    dropped: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        lines = [
            (
                f"converted into {self.output}: {self.tensors_written} tensors, "
                f"{self.bytes_written / 1e9:.2f} GB {dtype} in {len(self.shards)} shard(s)"
            ),
            f"vision tower: {self.vision_source}",
            (
                f"vocabulary: {self.original_vocab_size} + <video> (id {self.video_token_id}) -> {self.vocab_size} "
                "rows; new rows of embed_tokens and lm_head are the mean of the original rows"
            ),
        ]
        for reason, keys in self.dropped.items():
            lines.append(f"dropped {len(keys)} tensor(s) ({reason}): e.g. {keys[0]}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be bfloat16, float16 or float32, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def grow_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """`[V, H] -> [rows, H]`; the new rows are the mean of the existing ones (computed in float32).

    The mean keeps new input embeddings in distribution and gives new output rows an average logit; the
    `<video>` row is never read as an input (the memory replaces it) and every new id is suppressed at
    generation.
    """
    extra = rows - weight.shape[0]
    if extra < 0:
        raise ValueError(f"cannot grow {weight.shape[0]} rows to {rows}")
    mean = weight.float().mean(0, keepdim=True).to(weight.dtype)
    return torch.cat([weight, mean.expand(extra, -1)])


def expected_shapes(config) -> dict[str, tuple[int, ...]]:
    """State-dict shapes of `FlashVStreamForConditionalGeneration(config)`, built on the meta device."""
    from ..modeling import FlashVStreamForConditionalGeneration

    with torch.device("meta"):
        model = FlashVStreamForConditionalGeneration(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def convert_checkpoint(
    input: str,
    output: str | Path,
    *,
    vision_tower: str | None = None,
    vision_tower_from_checkpoint: bool = False,
    dtype: str | torch.dtype = "bfloat16",
    max_shard_size: int | str = "5GB",
    revision: str | None = None,
) -> ConversionReport:
    """Convert an original Flash-VStream checkpoint (folder or Hub repo id) into `output`.

    Args:
        input: a folder in the original layout, or a Hub repo id such as `IVGSZ/Flash-VStream-7b`.
        output: an empty or new folder.
        vision_tower: CLIP folder or Hub id (default: the checkpoint's `mm_vision_tower`, as the original).
        vision_tower_from_checkpoint: take the CLIP weights embedded in the checkpoint instead; `vision_tower`,
            if given, then only supplies the CLIP config.
        dtype: dtype of every floating-point tensor written (bf16 by default, as trained).
        max_shard_size: largest output shard, e.g. `"5GB"`.
        revision: Hub revision when `input` is a repo id.
    """
    dtype = parse_dtype(dtype)
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(f"--output {output} exists and is not an empty folder")
    source = resolve_input(input, revision)
    checkpoint = OriginalCheckpoint.open(source)
    original = checkpoint.config
    check_supported(original)
    keys = checkpoint.keys()
    plan = plan_keys(keys, vision_tower_from_checkpoint)

    # Sizes the config needs that only the weights know.
    shape_keys = [ORIGINAL_EMBEDDINGS, ORIGINAL_LM_HEAD, ORIGINAL_ATTENTION_QUERY]
    if vision_tower_from_checkpoint:
        shape_keys += vision_shape_keys(keys)
    shapes = checkpoint.shapes([k for k in shape_keys if k in keys])
    for key in (ORIGINAL_EMBEDDINGS, ORIGINAL_ATTENTION_QUERY):
        if key not in shapes:
            raise ValueError(f"the checkpoint has no {key}")
    check_embedding_shapes(shapes)

    vision_config, external_vision, vision_source = _vision_tower(
        original, keys, shapes, vision_tower, vision_tower_from_checkpoint
    )
    tokenizer = build_tokenizer(source, model_max_length=original.get("max_position_embeddings"))
    original_vocab = shapes[ORIGINAL_EMBEDDINGS][0]
    video_token_id = tokenizer.video_token_id
    if original_vocab != video_token_id:
        raise ValueError(
            f"the tokenizer has {video_token_id} tokens but {ORIGINAL_EMBEDDINGS} has {original_vocab} rows; "
            "the tokenizer files do not belong to these weights"
        )
    vocab_size = math.ceil((original_vocab + 1) / VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    config = build_config(
        original, vision_config, shapes[ORIGINAL_ATTENTION_QUERY][0], vocab_size, video_token_id, dtype
    )

    expected = expected_shapes(config)
    produced = set(plan.renamed.values()) | set(external_vision)
    missing, unexpected = sorted(set(expected) - produced), sorted(produced - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"the checkpoint does not fit the model: missing keys {missing[:20]}, unexpected keys {unexpected[:20]}"
        )

    report = ConversionReport(output, vision_source, dtype, original_vocab, vocab_size, video_token_id)
    report.dropped = plan.dropped_by_reason()
    report.notes += leftover_notes(output)
    staging = make_staging_folder(output)
    try:
        report.shards, report.bytes_written = _write_weights(
            checkpoint, plan, external_vision, expected, dtype, vocab_size, staging, max_shard_size
        )
        report.tensors_written = len(expected)
        config.save_pretrained(staging)
        report.notes += save_generation_config(checkpoint.folder, config, staging)
        save_processor(config, tokenizer, staging)
        publish(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def check_embedding_shapes(shapes: dict[str, tuple[int, ...]]) -> None:
    """`lm_head.weight` must have the shape of `embed_tokens.weight`, one row per token of the vocabulary
    (both are grown by the same mean rows, so a head one row short would otherwise pass unnoticed)."""
    embeddings = shapes[ORIGINAL_EMBEDDINGS]
    if len(embeddings) != 2:
        raise ValueError(f"{ORIGINAL_EMBEDDINGS} has shape {embeddings}, expected [vocabulary, hidden size]")
    head = shapes.get(ORIGINAL_LM_HEAD)
    if head is not None and head != embeddings:
        raise ValueError(
            f"{ORIGINAL_LM_HEAD} has shape {head} but {ORIGINAL_EMBEDDINGS} has {embeddings}: the output layer "
            f"needs one row of the hidden size per token of the {embeddings[0]}-token vocabulary"
        )


def make_staging_folder(output: Path) -> Path:
    """A new hidden folder next to `output` to write the conversion into (normal permissions, unlike mkdtemp)."""
    output = Path(os.path.abspath(output))
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}{STAGING_INFIX}{os.getpid()}-{secrets.token_hex(3)}"
    staging.mkdir()
    return staging


def publish(staging: Path, output: Path) -> None:
    """Rename the complete `staging` folder to `output` (in one step: same parent, same file system)."""
    output = Path(os.path.abspath(output))
    if output.is_dir():
        try:
            output.rmdir()  # empty when the conversion started; rename cannot replace a folder on every OS
        except OSError as error:
            raise FileExistsError(f"--output {output} is no longer empty; the conversion is not written") from error
    os.replace(staging, output)


def leftover_notes(output: Path) -> list[str]:
    """Notes naming the staging folders of earlier conversions into `output` that were interrupted."""
    output = Path(os.path.abspath(output))
    leftovers = sorted(output.parent.glob(f".{glob.escape(output.name)}{STAGING_INFIX}*"))
    return [
        f"{path} is left over from an interrupted conversion (or one still running): delete it when it is not"
        for path in leftovers
    ]


def _vision_tower(
    original: dict, keys: list[str], shapes: dict, vision_tower: str | None, from_checkpoint: bool
) -> tuple[dict, dict[str, torch.Tensor], str]:
    """CLIP vision config, the CLIP tensors to write (empty when they come from the checkpoint) and a
    description of their source."""
    if from_checkpoint:
        if vision_tower is not None:
            return (
                load_vision_config(vision_tower),
                {},
                f"the CLIP copy embedded in the checkpoint (config from {vision_tower})",
            )
        return vision_config_from_shapes(keys, shapes), {}, "the CLIP copy embedded in the checkpoint"
    vision_tower = vision_tower or original.get("mm_vision_tower")
    if not vision_tower:
        raise ValueError("config.json has no mm_vision_tower; pass --vision-tower")
    vision_config, clip_state = load_vision_tower(vision_tower)
    tensors = {f"model.vision_tower.{name}": clip_state.pop(name) for name in list(clip_state)}
    return vision_config, tensors, str(vision_tower)


def _write_weights(
    checkpoint: OriginalCheckpoint,
    plan: KeyPlan,
    external_vision: dict[str, torch.Tensor],
    expected: dict[str, tuple[int, ...]],
    dtype: torch.dtype,
    vocab_size: int,
    output: Path,
    max_shard_size: int | str,
) -> tuple[list[str], int]:
    """Stream every kept tensor into output shards, one input shard at a time; returns shard names and bytes.

    A progress bar on stderr counts the tensors read (kept or dropped); transformers' switch turns it off
    (`transformers.utils.logging.disable_progress_bar()`, `HF_HUB_DISABLE_PROGRESS_BARS=1`).
    """
    writer = ShardedSafetensorsWriter(output, max_shard_size)
    total = len(external_vision) + len(plan.renamed) + len(plan.dropped)
    seen: set[str] = set()
    with logging.tqdm(total=total, desc="Converting", unit="tensor") as progress:
        progress.set_postfix_str("vision tower", refresh=False)
        for name in list(external_vision):  # popped so each fp32 CLIP tensor is freed once written
            _write(writer, name, external_vision.pop(name), expected, dtype)
            progress.update()
        for path, shard in zip(checkpoint.weight_files, checkpoint.iter_shards()):
            progress.set_postfix_str(path.name)  # a .bin shard may take a while to open
            for key, tensor in shard:
                if key in seen or (key not in plan.renamed and key not in plan.dropped):
                    raise ValueError(f"{key} is stored twice, or in a shard its index does not list")
                seen.add(key)
                if key in plan.renamed:
                    name = plan.renamed[key]
                    if name in EMBEDDINGS:
                        tensor = grow_rows(tensor, vocab_size)
                    _write(writer, name, tensor, expected, dtype)
                progress.update()
            tensor = None  # the last tensor would keep the shard's memory map alive
            writer.release_inputs()
    unread = sorted(set(plan.renamed) - seen)
    if unread:
        raise ValueError(f"the index lists keys that its shards do not hold: {unread[:20]}")
    return writer.finish(), writer.total_bytes


def _write(writer, name: str, tensor: torch.Tensor, expected: dict, dtype: torch.dtype) -> None:
    if tuple(tensor.shape) != expected[name]:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}, the model expects {expected[name]}")
    writer.add(name, tensor.to(dtype) if tensor.is_floating_point() else tensor)


def save_generation_config(source: Path, config, output: Path) -> list[str]:
    """The original generation_config.json with every id from `<video>` on suppressed; returns notes."""
    from transformers import GenerationConfig

    path = source / "generation_config.json"
    values = json.loads(path.read_text()) if path.is_file() else {}
    values = {k: v for k, v in values.items() if k not in ("transformers_version", "_from_model_config")}
    text = config.text_config
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        values.setdefault(name, getattr(text, name, None))
    notes = []
    if not values.get("do_sample"):
        # transformers 4.31 kept sampling settings that only applied when a caller passed do_sample=True
        # (the original's evaluation did, with temperature=0.002); transformers 5 refuses to save them on a
        # greedy config. Greedy stays the default, as in the original.
        dropped = {k: values.pop(k) for k in SAMPLING_FIELDS if k in values}
        if dropped:
            notes.append(
                f"generation_config: {dropped} applied only when sampling; transformers 5 does not save them with "
                "greedy decoding, so pass them with do_sample=True to sample as the original did"
            )
    values["suppress_tokens"] = list(range(config.video_token_id, text.vocab_size))
    GenerationConfig(**values).save_pretrained(output)
    return notes


def save_processor(config, tokenizer, output: Path) -> None:
    """Tokenizer, CLIP preprocessing (docs/original_model.md, "CLIP preprocessing") and chat template, as one
    `FlashVStreamProcessor`."""
    from transformers import CLIPImageProcessorPil
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

    from ..processing import FlashVStreamProcessor

    size = config.vision_config.image_size
    image_processor = CLIPImageProcessorPil(
        do_convert_rgb=True,
        do_resize=True,
        size={"shortest_edge": size},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )
    FlashVStreamProcessor.from_model_config(config, image_processor, tokenizer).save_pretrained(output)


# -- command line -------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", required=True, type=text("input"), help="original checkpoint folder, or Hub repo id (IVGSZ/Flash-VStream-7b)"
    )
    parser.add_argument("--output", required=True, type=text("output folder"), help="new or empty output folder")
    parser.add_argument("--vision-tower", help="CLIP folder or Hub id (default: the checkpoint's mm_vision_tower)")
    parser.add_argument(
        "--vision-tower-from-checkpoint",
        action="store_true",
        help="use the CLIP weights embedded in the checkpoint instead of loading --vision-tower",
    )
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES), help="weights dtype (default bfloat16)")
    parser.add_argument("--max-shard-size", default="5GB", type=byte_size, help="largest output shard (default 5GB)")
    parser.add_argument("--revision", help="Hub revision of --input")
    add_upload_arguments(parser)  # with --push-to-hub, the Hub files are exported first


def run(args: argparse.Namespace) -> int:
    """`flash-vstream convert`; returns the exit status."""
    try:
        if args.push_to_hub:
            check_repo_id(args.push_to_hub)  # before the conversion, not after it
        report = convert_checkpoint(
            args.input,
            args.output,
            vision_tower=args.vision_tower,
            vision_tower_from_checkpoint=args.vision_tower_from_checkpoint,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
            revision=args.revision,
        )
        print(report.summary())
        if args.push_to_hub:
            export_hub(args.output, repo_id=args.push_to_hub)
            push_to_hub(args.output, args.push_to_hub, private=args.private, dry_run=args.dry_run)
    except (OSError, ValueError, RuntimeError, ImportError) as error:
        print(f"flash-vstream convert: error: {error}", file=sys.stderr)
        return 1
    return 0
