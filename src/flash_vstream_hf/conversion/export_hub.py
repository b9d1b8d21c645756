"""`flash-vstream export-hub DIR`: make a converted folder a self-sufficient Hub repo, and upload it.

Adds what loading needs on a machine without this package: the modeling and processing sources as remote code
(copied flat; they import each other relatively), `auto_map` entries for `AutoConfig`, `AutoModel`,
`AutoModelForImageTextToText` and `AutoProcessor`, the model card as README.md (its usage code naming the repo
id when it is known), and `handler.py` + `requirements.txt` for Inference Endpoints. Then

    AutoModelForImageTextToText.from_pretrained(repo, trust_remote_code=True)
    AutoProcessor.from_pretrained(repo, trust_remote_code=True)

work with transformers alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .. import modeling, processing, qwen2vl
from ..commands.arguments import text
from ..modeling import safetensors_file, transformers_compat
from ..modeling.transformers_compat import SUPPORTED_TRANSFORMERS
from ..processing import demuxers, video_io

MODEL_AUTO_MAP = {
    "AutoConfig": "configuration_flash_vstream.FlashVStreamConfig",
    "AutoModel": "modeling_flash_vstream.FlashVStreamModel",
    "AutoModelForImageTextToText": "modeling_flash_vstream.FlashVStreamForConditionalGeneration",
    "AutoProcessor": "processing_flash_vstream.FlashVStreamProcessor",
}
PROCESSOR_AUTO_MAP = {"AutoProcessor": MODEL_AUTO_MAP["AutoProcessor"]}
QWEN2VL_AUTO_MAP = {
    "AutoConfig": "configuration_flash_vstream_qwen2vl.FlashVStreamQwen2VLConfig",
    "AutoModel": "modeling_flash_vstream_qwen2vl.FlashVStreamQwen2VLModel",
    "AutoModelForImageTextToText": "modeling_flash_vstream_qwen2vl.FlashVStreamQwen2VLForConditionalGeneration",
    "AutoProcessor": "processing_flash_vstream_qwen2vl.FlashVStreamQwen2VLProcessor",
}


@dataclass(frozen=True)
class Family:
    """What export-hub needs to know of a model family: its self-contained packages, `auto_map` and card, and the
    modules of other packages it ships too (self-contained ones, copied flat). handler.py serves every family
    through the streaming interface they share (families.py)."""

    packages: tuple
    auto_map: dict
    model_card: str
    shared_modules: tuple = ()


FAMILIES = {
    "flash_vstream": Family((modeling, processing), MODEL_AUTO_MAP, "MODEL_CARD.md"),
    # v2 ships v1's release check (its config module calls it at import), the memory-file writer its memory saves
    # with, and the decoder handler.py reads videos with
    "flash_vstream_qwen2_vl": Family(
        (qwen2vl,),
        QWEN2VL_AUTO_MAP,
        "MODEL_CARD_QWEN2VL.md",
        (transformers_compat, safetensors_file, video_io, demuxers),
    ),
}
# What Inference Endpoints install next to their base image (the handler decodes videos with PyAV). The remote
# code refuses a transformers release outside the tested range, so the endpoint must install one inside it.
ENDPOINT_REQUIREMENTS = f"{SUPPORTED_TRANSFORMERS}\naccelerate>=1.0\nav>=12\n"

# Filled in when the card is written as README.md (see `render_model_card`).
CARD_REPO_ID = "{{REPO_ID}}"
CARD_REPO_ID_NOTE = "{{REPO_ID_NOTE}}"  # a paragraph of its own: a note, or nothing once the repo id is known
CARD_TRANSFORMERS = "{{TRANSFORMERS}}"
UNKNOWN_REPO_ID = "OWNER/NAME"
UNKNOWN_REPO_ID_NOTE = (
    f"> **Replace `{UNKNOWN_REPO_ID}`** in the code below with the id of this repository on the Hub (as in its URL), "
    "or with the path of a local copy: it was not known when this card was written "
    "(`flash-vstream export-hub --repo-id`)."
)


def remote_code_files(model_type: str = "flash_vstream") -> list[Path]:
    """The self-contained modeling and processing sources of a family (package `__init__` files excluded), and
    the modules of other packages it shares."""
    family = FAMILIES[model_type]
    files = []
    for package in family.packages:
        files += sorted(p for p in Path(package.__file__).parent.glob("*.py") if p.name != "__init__.py")
    files += [Path(module.__file__) for module in family.shared_modules]
    names = [p.name for p in files]
    if len(set(names)) != len(names):
        raise RuntimeError(f"remote-code files must have distinct names to be copied flat, got {names}")
    return files


def check_repo_id(repo_id: str) -> str:
    """`repo_id` if it is a valid Hub model repo id (`owner/name`), else a `ValueError` saying why."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"{repo_id!r} is not a Hub repo id: {error}") from error
    if repo_id.count("/") != 1:
        raise ValueError(f"{repo_id!r} is not a Hub repo id: expected owner/name")
    return repo_id


def render_model_card(template: str, repo_id: str | None = None) -> str:
    """The card `template` with the repo id and the supported transformers filled in.

    Without a repo id the usage code says `OWNER/NAME`, and a note before it says what to replace.
    """
    card = template.replace(CARD_TRANSFORMERS, SUPPORTED_TRANSFORMERS)
    card = card.replace(CARD_REPO_ID, repo_id or UNKNOWN_REPO_ID)
    # the note is a paragraph of its own: once the repo id is known, it goes with the blank line after it
    return card.replace(f"{CARD_REPO_ID_NOTE}\n\n", "" if repo_id else f"{UNKNOWN_REPO_ID_NOTE}\n\n")


def export_hub(folder: str | Path, model_card: str | Path | None = None, repo_id: str | None = None) -> list[str]:
    """Add the Hub files to a converted `folder`; returns the names written.

    Args:
        folder: output of `flash-vstream convert` (or any `save_pretrained` of this model and processor).
        model_card: the card to write as README.md (default: the project's MODEL_CARD.md).
        repo_id: the Hub repo the folder is for (`owner/name`), named in the card's usage code; without it the
            code says `OWNER/NAME` and the card says to replace it.
    """
    folder = Path(folder)
    if repo_id is not None:
        check_repo_id(repo_id)
    for required in ("config.json", "processor_config.json"):
        if not (folder / required).is_file():
            raise FileNotFoundError(f"{folder} has no {required}; export a folder written by `flash-vstream convert`")
    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(
            f"{folder}/config.json is not a Flash-VStream config (model_type {model_type!r}, expected one of "
            f"{sorted(FAMILIES)})"
        )
    family = FAMILIES[model_type]

    written = []
    for source in remote_code_files(model_type):
        shutil.copyfile(source, folder / source.name)
        written.append(source.name)
    _update_json(folder / "config.json", family.auto_map)
    _update_json(folder / "processor_config.json", {"AutoProcessor": family.auto_map["AutoProcessor"]})
    written += ["config.json", "processor_config.json"]

    card = Path(model_card) if model_card is not None else resources.files(__package__) / family.model_card
    (folder / "README.md").write_text(render_model_card(card.read_text(), repo_id))
    written.append("README.md")
    (folder / "handler.py").write_text((resources.files(__package__) / "handler.py").read_text())
    (folder / "requirements.txt").write_text(ENDPOINT_REQUIREMENTS)
    written += ["handler.py", "requirements.txt"]
    return written


def _update_json(path: Path, auto_map: dict) -> None:
    values = json.loads(path.read_text())
    values["auto_map"] = {**values.get("auto_map", {}), **auto_map}
    path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")


def push_to_hub(
    folder: str | Path, repo_id: str, *, private: bool = False, dry_run: bool = False, token: str | None = None
) -> list[tuple[str, int]]:
    """Upload every file of `folder` to the model repo `repo_id` (created if needed).

    Returns `(path, bytes)` of the files; with `dry_run` only prints them and touches no network.
    """
    folder = Path(folder)
    files = sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file())
    if dry_run:
        print(f"would upload {len(files)} files ({sum(s for _, s in files) / 1e9:.2f} GB) to {repo_id}:")
        for path, size in files:
            print(f"  {path}  {size:,} bytes")
        return files
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", commit_message="Upload Flash-VStream")
    print(f"uploaded {len(files)} files to https://huggingface.co/{repo_id}")
    return files


# -- command line -------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `flash-vstream export-hub`."""
    parser.add_argument("folder", type=text("folder"), help="a folder written by `flash-vstream convert`")
    parser.add_argument("--model-card", help="card to write as README.md (default: the project's MODEL_CARD.md)")
    parser.add_argument(
        "--repo-id", metavar="REPO", help="the Hub repo the card's usage code names (default: --push-to-hub's)"
    )
    add_upload_arguments(parser)


def add_upload_arguments(parser: argparse.ArgumentParser) -> None:
    """`--push-to-hub REPO`, `--private` and `--dry-run`, shared with `flash-vstream convert`."""
    parser.add_argument("--push-to-hub", metavar="REPO", help="then upload the folder to this Hub model repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--dry-run", action="store_true", help="with --push-to-hub: list what would be uploaded")


def card_repo_id(repo_id: str | None, push_to_hub: str | None) -> str | None:
    """The repo id the card names: `--repo-id`, else `--push-to-hub`'s; they must agree when both are given."""
    if repo_id and push_to_hub and repo_id != push_to_hub:
        raise ValueError(f"--repo-id {repo_id} but --push-to-hub {push_to_hub}: the card would name another repo")
    return repo_id or push_to_hub


def run(args: argparse.Namespace) -> int:
    """`flash-vstream export-hub`; returns the exit status."""
    try:
        repo_id = card_repo_id(args.repo_id, args.push_to_hub)
        written = export_hub(args.folder, args.model_card, repo_id=repo_id)
        print(f"added to {args.folder}: {', '.join(written)}")
        if repo_id is None and UNKNOWN_REPO_ID in (Path(args.folder) / "README.md").read_text():
            print(
                f"note: README.md's usage code says {UNKNOWN_REPO_ID}; pass --repo-id owner/name to name the repo",
                file=sys.stderr,
            )
        if args.push_to_hub:
            push_to_hub(args.folder, args.push_to_hub, private=args.private, dry_run=args.dry_run)
    except (OSError, ValueError) as error:
        print(f"flash-vstream export-hub: error: {error}", file=sys.stderr)
        return 1
    return 0
