"""3-D rotary positions (M-RoPE) of Flash-VStream v2: the placeholder layout and the memory's AM-RoPE.

The original works in two steps, and the released weights were trained with both, quirks included:

1. `placeholder_rope_index` (the original's `get_rope_index`): the video's memory tokens are laid out as if they
   were a plain Qwen2-VL video: the DAM block as a grid `(n_dam, h/2, w/2)` starting at the video's first
   position `s`, then the CSM block as a grid `(n_csm, h'/2, w'/2)` offset by the DAM token count in all three
   axes. Text after the video resumes at the block's largest position + 1. `rope_deltas` (used to place
   generated tokens) come from this layout.
2. `memory_relative_positions` + `apply_memory_positions` (the original's `calc_am_rope`): the temporal axis of the
   memory tokens is then overwritten with *where the memory came from*: each DAM patch's temporal-patch index,
   each CSM entry's rounded mean index (+ the DAM token count). Height and width stay. Since a frame index can
   exceed the placeholder's temporal extent, the text after a video can sit *below* some memory positions.

transformers' own `Qwen2VLModel.get_rope_index` resumes text after `max(h, w)` of the grid instead, so it is not
used here.
"""

from __future__ import annotations

import torch

from .flash_memory import MERGE_SIZE


def _grid_positions(temporal: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """`[3, len(temporal) * grid_h * grid_w]` (t, h, w) positions of a grid whose temporal indices are `temporal`."""
    n = temporal.shape[0]
    t_index = temporal.view(-1, 1).expand(-1, grid_h * grid_w).flatten()
    h_index = torch.arange(grid_h, device=temporal.device).view(1, -1, 1).expand(n, -1, grid_w).flatten()
    w_index = torch.arange(grid_w, device=temporal.device).view(1, 1, -1).expand(n, grid_h, -1).flatten()
    return torch.stack([t_index, h_index, w_index])


def memory_relative_positions(
    dam_positions: torch.Tensor,
    dam_grid: tuple[int, int, int],
    csm_positions: torch.Tensor,
    csm_grid: tuple[int, int, int],
) -> torch.Tensor:
    """AM-RoPE positions of one video's memory tokens, relative to the video's first position: `[n_tokens, 3]`.

    DAM tokens: `(temporal-patch index, row, column)` on the merged grid; CSM tokens: `(rounded mean index, row,
    column) + n_dam_tokens`. With `dam_positions = arange(n_dam)` and `csm_positions = arange(n_csm)` this is the
    placeholder layout.
    """
    dam = _grid_positions(dam_positions.long(), dam_grid[1] // MERGE_SIZE, dam_grid[2] // MERGE_SIZE)
    csm = _grid_positions(csm_positions.long(), csm_grid[1] // MERGE_SIZE, csm_grid[2] // MERGE_SIZE)
    return torch.cat([dam, csm + dam.shape[1]], dim=1).T.contiguous()


def placeholder_rope_index(
    input_ids: torch.LongTensor,
    video_token_id: int,
    memory_grids: list[tuple[tuple[int, int, int], tuple[int, int, int]]] | None = None,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids `[3, batch, seq]` and `rope_deltas` `[batch, 1]` in the original's placeholder layout.

    Args:
        input_ids: `[batch, seq]`, each video's memory tokens as a run of `video_token_id`.
        memory_grids: per video, in order through the batch, `(dam_grid, csm_grid)`; `None` for a text-only batch.
        attention_mask: `[batch, seq]`; padding gets position 1, as in the original.

    `rope_deltas[b] = max position + 1 - number of unpadded tokens` (what transformers' decoding adds to the
    unpadded token count).
    """
    batch, length = input_ids.shape
    if memory_grids is None:
        if attention_mask is None:
            positions = torch.arange(length, device=input_ids.device).view(1, 1, -1).expand(3, batch, -1).clone()
            return positions, torch.zeros(batch, 1, dtype=torch.long, device=input_ids.device)
        positions = attention_mask.long().cumsum(-1) - 1
        positions = positions.masked_fill(attention_mask == 0, 1).unsqueeze(0).expand(3, -1, -1).clone()
        deltas = positions.amax(dim=(0, 2)).view(-1, 1) + 1 - attention_mask.long().sum(-1, keepdim=True)
        return positions.to(input_ids.device), deltas

    position_ids = torch.ones(3, batch, length, dtype=input_ids.dtype, device=input_ids.device)
    grids = iter(memory_grids)
    deltas = []
    for row in range(batch):
        keep = (
            attention_mask[row] == 1
            if attention_mask is not None
            else torch.ones_like(input_ids[row], dtype=torch.bool)
        )
        tokens = input_ids[row][keep]
        is_video = (tokens == video_token_id).tolist()
        blocks: list[torch.Tensor] = []
        next_position, start = 0, 0
        while True:
            try:
                video_start = is_video.index(True, start)
            except ValueError:
                break
            try:
                dam_grid, csm_grid = next(grids)
            except StopIteration:
                raise ValueError(
                    "input_ids hold more video placeholder runs than there are videos in video_grid_thw"
                ) from None
            text = torch.arange(video_start - start, device=input_ids.device).view(1, -1).expand(3, -1)
            blocks.append(text + next_position)
            first = next_position + video_start - start
            dam_count, csm_count = dam_grid[0], csm_grid[0]
            memory = (
                memory_relative_positions(
                    torch.arange(dam_count, device=input_ids.device),
                    dam_grid,
                    torch.arange(csm_count, device=input_ids.device),
                    csm_grid,
                ).T
                + first
            )  # [3, n_tokens]
            n_tokens = memory.shape[1]
            if not all(is_video[video_start : video_start + n_tokens]):
                raise ValueError(
                    f"a video's memory has {n_tokens} tokens but its placeholder run in input_ids has "
                    f"{_run_length(is_video, video_start)}: build the prompt with FlashVStreamQwen2VLProcessor"
                )
            dam_tokens = dam_count * (dam_grid[1] // MERGE_SIZE) * (dam_grid[2] // MERGE_SIZE)
            blocks.append(memory[:, :dam_tokens])
            blocks.append(memory[:, dam_tokens:])
            # The original resumes after the last non-empty block (the CSM block is never empty).
            last = blocks[-1] if blocks[-1].numel() else blocks[-2]
            next_position = int(last.max()) + 1
            start = video_start + n_tokens
        if start < len(is_video):
            text = torch.arange(len(is_video) - start, device=input_ids.device).view(1, -1).expand(3, -1)
            blocks.append(text + next_position)
        row_positions = torch.cat(blocks, dim=1) if blocks else torch.zeros(3, 0, dtype=torch.long)
        position_ids[:, row, keep] = row_positions.to(position_ids.dtype)
        top = int(row_positions.max()) if row_positions.numel() else -1
        deltas.append(top + 1 - len(is_video))
    return position_ids, torch.tensor(deltas, device=input_ids.device).unsqueeze(1)


def _run_length(is_video: list[bool], start: int) -> int:
    end = start
    while end < len(is_video) and is_video[end]:
        end += 1
    return end - start


def video_token_starts(
    input_ids: torch.LongTensor, video_token_id: int, token_counts: list[int]
) -> list[tuple[int, int]]:
    """`(row, index)` of each video's first memory token, videos in order through the batch, splitting runs of
    `video_token_id` by the videos' token counts."""
    starts = []
    counts = iter(token_counts)
    for row in range(input_ids.shape[0]):
        is_video = (input_ids[row] == video_token_id).tolist()
        index = 0
        while index < len(is_video):
            if not is_video[index]:
                index += 1
                continue
            try:
                count = next(counts)
            except StopIteration:
                raise ValueError(
                    f"input_ids hold more video placeholder tokens than the {len(token_counts)} video memories"
                ) from None
            if not all(is_video[index : index + count]):
                raise ValueError(
                    f"a video's memory has {count} tokens but its placeholder run in input_ids is shorter "
                    f"({_run_length(is_video, index)} tokens)"
                )
            starts.append((row, index))
            index += count
    if len(starts) != len(token_counts):
        raise ValueError(
            f"got {len(token_counts)} video memories but input_ids hold placeholders for {len(starts)} videos"
        )
    return starts


def apply_memory_positions(
    position_ids: torch.Tensor, input_ids: torch.LongTensor, video_token_id: int, relative_positions
) -> torch.Tensor:
    """Position ids with every video's memory tokens at their AM-RoPE positions (a new tensor).

    Args:
        position_ids: `[3, batch, seq]`, or `[4, batch, seq]` (text positions first, as `generate()` builds them).
        relative_positions: per video, `[n_tokens, 3]` from `memory_relative_positions`.

    Each video's positions are offset by the position its first token has in `position_ids` (the placeholder
    layout puts it right after the preceding text).
    """
    position_ids = position_ids.clone()
    rope = position_ids[-3:]  # a view: [3, batch, seq]
    counts = [positions.shape[0] for positions in relative_positions]
    for (row, start), relative in zip(video_token_starts(input_ids, video_token_id, counts), relative_positions):
        first = rope[0, row, start]
        rope[:, row, start : start + relative.shape[0]] = relative.T.to(rope) + first
    return position_ids
