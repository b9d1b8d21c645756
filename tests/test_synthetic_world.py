"""The synthetic stream world: deterministic per seed, ground truth matching the pixels, questions answerable
exactly as their family says (hand-built cases and ground-truth oracles)."""

import random

import numpy as np
import pytest

from flash_vstream_hf.synthetic import FAMILIES, QuestionMaker, SyntheticStream, ask
from flash_vstream_hf.synthetic.questions import LONG_RANGE_WINDOW, vocabulary
from flash_vstream_hf.synthetic.spec import demo_processor, word_vocabulary
from flash_vstream_hf.synthetic.world import BACKGROUNDS, COLOURS, Scene, Track, shape_mask


def still(shape, colour, start, end, x=0.5, y=0.5, **kwargs):
    return Track(shape, colour, start, end, x, y, 0.0, 0.0, **kwargs)


def hand_built():
    """0-9: a red circle; 10-19: nothing; 20-29: a blue square turning green at 25, a red triangle from 22 to 27."""
    return SyntheticStream.from_scenes(
        [
            Scene(0, 10, 0, (still("circle", "red", 0, 10),)),
            Scene(10, 20, 1, ()),
            Scene(
                20,
                30,
                2,
                (
                    still("square", "blue", 20, 30, x=0.3, change_at=25, new_colour="green"),
                    still("triangle", "red", 22, 27, x=0.7),
                ),
            ),
        ]
    )


def test_same_seed_same_stream_and_prefixes_do_not_depend_on_length():
    a, b = SyntheticStream(7), SyntheticStream(7)
    b.frames(0, 600)  # draws many more scenes first
    assert np.array_equal(a.frames(0, 200), b.frames(0, 200))
    assert a.scenes[:3] == b.scenes[:3] and a.palette == b.palette
    assert not np.array_equal(SyntheticStream(8).frames(0, 50), a.frames(0, 50))


def test_frames_shape_and_scene_durations_vary():
    stream = SyntheticStream(1)
    assert stream.frames(0, 5).shape == (5, 32, 32, 3) and stream.frame(0).dtype == np.uint8
    stream.frame(3000)
    durations = {scene.end - scene.start for scene in stream.scenes}
    assert min(durations) <= 5 and max(durations) >= 30


def test_hand_built_ground_truth():
    stream = hand_built()
    assert stream.objects_at(5) == [("circle", "red")]
    assert stream.objects_at(15) == []
    assert stream.objects_at(21) == [("square", "blue")]
    assert stream.objects_at(24) == [("square", "blue"), ("triangle", "red")]
    assert stream.objects_at(26) == [("square", "green"), ("triangle", "red")]
    assert stream.objects_at(28) == [("square", "green")]
    with pytest.raises(IndexError):
        stream.frame(30)


def test_pixels_show_the_ground_truth():
    stream = hand_built()
    assert tuple(stream.frame(5)[16, 16]) == COLOURS["red"]  # the circle's centre
    empty = stream.frame(15).astype(float)
    assert np.abs(empty.mean((0, 1)) - BACKGROUNDS[1]).max() < 3  # background plus zero-mean noise
    assert tuple(stream.frame(26)[16, int(0.3 * 32)]) == COLOURS["green"]  # the square after its change
    assert tuple(stream.frame(24)[17, int(0.7 * 32)]) == COLOURS["red"]  # the triangle


def test_shape_masks_differ_and_have_sensible_areas():
    masks = {shape: shape_mask(shape, 16, 16, 6.4, 32) for shape in ("circle", "square", "triangle")}
    areas = {shape: int(mask.sum()) for shape, mask in masks.items()}
    assert 100 < areas["circle"] < 150 and 90 < areas["square"] < 130 and 50 < areas["triangle"] < 100
    assert not np.array_equal(masks["circle"], masks["square"])


def test_hand_built_questions():
    maker, rng = QuestionMaker(hand_built(), long_range_window=5), random.Random(0)
    assert maker.now_count(15, rng).answer == "zero"
    assert maker.now_colour(5, rng).answer == "red"
    q = maker.recent_colour(27, random.Random(3))
    assert q.family == "recent" and q.answer == {"one": "green", "two": "green", "three": "blue"}[q.text.split()[-3]]
    # At 19 the last 5 frames (15..19) are empty: red was seen before, nothing else ever was.
    for seed in range(20):
        q = maker.long_colour_seen(19, random.Random(seed))
        colour = q.text.split()[2]
        assert q.answer == ("yes" if colour == "red" else "no")
    assert maker.long_longest(19, rng).answer == "red"  # the only colour so far, absent from the window
    assert maker.long_longest(29, rng) is None  # red is in the last 5 frames: not a long-range question


def test_hard_negatives_ask_now_about_a_colour_that_left_the_screen():
    # At 28 a green square is on screen; red and blue were on screen before, the other three colours never.
    def no_colours(share=None):  # None: the default, as evaluation and the demo ask
        maker = QuestionMaker(hand_built()) if share is None else QuestionMaker(hand_built(), hard_negative_share=share)
        questions = [maker.now_present(28, random.Random(seed)) for seed in range(60)]
        return [q.text.split()[3] for q in questions if q.answer == "no"], questions

    hard, questions = no_colours(1.0)
    assert set(hard) == {"red", "blue"}  # only the newest frame tells these are gone
    assert 15 <= len(hard) <= 45  # yes and no stay balanced
    assert all(q.answer == "yes" for q in questions if q.text.split()[3] == "green")
    plain, _ = no_colours()
    assert {"white", "yellow", "purple"} & set(plain)  # by default: any absent colour
    # Nothing seen before frame 0: a hard negative falls back to any absent colour rather than no question.
    first = QuestionMaker(hand_built(), hard_negative_share=1.0).now_present(0, random.Random(1))
    assert first is not None and first.text.split()[3] in COLOURS


def oracle(stream, question, frames):
    """Answer `question` from the ground truth of `frames` only (a recent-window oracle when those are the last
    frames; a perfect one with all frames)."""
    words = question.text.split()
    seen = [o for t in frames for o in stream.objects_at(t)]
    if question.kind == "long_colour":
        return "yes" if any(c == words[2] for _, c in seen) else "no"
    if question.kind == "long_shape":
        return "yes" if any(s == words[2] for s, _ in seen) else "no"
    if question.kind == "long_longest":
        counts = {c: sum(c in {o[1] for o in stream.objects_at(t)} for t in frames) for c in COLOURS}
        return max(counts, key=counts.get) if any(counts.values()) else "none"
    raise ValueError(question.kind)


def test_long_range_answers_need_frames_older_than_the_recent_window():
    full = window = total = 0
    for seed in range(12):
        stream, rng = SyntheticStream(100 + seed), random.Random(seed)
        maker = QuestionMaker(stream)
        for t in (60, 150, 400):
            for _ in range(6):
                q = ask(maker, "long-range", t, rng)
                if q is None:
                    continue
                total += 1
                full += oracle(stream, q, range(t + 1)) == q.answer
                window += oracle(stream, q, range(t + 1 - LONG_RANGE_WINDOW, t + 1)) == q.answer
    assert total > 100
    assert full == total  # answerable from the whole stream
    assert window / total < 0.6  # the last LONG_RANGE_WINDOW frames give chance-level answers at best


def test_now_and_recent_are_answered_by_the_last_frames_and_recent_is_not_the_newest_frame():
    differs = total = 0
    for seed in range(10):
        stream, rng = SyntheticStream(200 + seed), random.Random(seed)
        maker = QuestionMaker(stream)
        for t in (20, 90):
            for _ in range(10):
                q = ask(maker, "recent", t, rng)
                if q is None:  # rarely: no template defined at t (e.g. nothing on screen then or now)
                    continue
                lag = {"one": 1, "two": 2, "three": 3}[q.text.split()[-3]]
                words = q.text.split()
                then, now = stream.objects_at(t - lag), stream.objects_at(t)
                if q.kind == "recent_colour":
                    assert dict(then)[words[4]] == q.answer
                    differs += dict(now).get(words[4]) != q.answer
                else:
                    assert q.answer == ("yes" if any(c == words[3] for _, c in then) else "no")
                    differs += (any(c == words[3] for _, c in now)) != (q.answer == "yes")
                total += 1
                n = ask(maker, "now", t, rng)
                assert n.time == t and n.family == "now"
    # Half are drawn where the newest frame gives another answer *when the last seconds allow it*; scenes last
    # 3 to 40 s, so most of the time they do not, and about a quarter of all recent questions end up that way.
    assert total > 150 and differs / total > 0.2


def test_every_question_word_is_in_the_tokenizer_and_answers_are_single_words():
    vocab = word_vocabulary()
    processor = demo_processor()
    assert set(vocabulary()) <= set(vocab)
    stream, rng = SyntheticStream(5), random.Random(5)
    maker = QuestionMaker(stream)
    for family in FAMILIES:
        for t in (40, 80):
            q = ask(maker, family, t, rng)
            ids = processor.tokenizer(q.text, add_special_tokens=False)["input_ids"]
            assert processor.tokenizer.unk_token_id not in ids
            assert q.answer in vocab and q.answer in q.options and " " not in q.answer


def test_grounding_labels_follow_the_ground_truth():
    from flash_vstream_hf.synthetic.grounding import GROUNDED_WORDS, frame_labels

    labels = frame_labels(hand_built(), [5, 15, 23, 26])
    on = [{GROUNDED_WORDS[i] for i in row.nonzero().flatten().tolist()} for row in labels]
    both = {"square", "red", "triangle"}
    assert on == [{"red", "circle"}, set(), {"blue"} | both, {"green"} | both]


def test_a_sampled_stream_plays_the_source_frames_it_names_and_questions_follow_what_it_plays():
    from flash_vstream_hf.synthetic.world import SampledStream

    source = hand_built()
    times = [0, 12, 14, *range(16, 30)]  # one frame of the red circle, then every frame from 16 on
    view = SampledStream(source, times)
    assert len(view) == len(times) and view.seed == source.seed
    for t in (0, 1, 5, len(times) - 1):
        assert view.objects_at(t) == source.objects_at(times[t])
        np.testing.assert_array_equal(view.frame(t), source.frame(times[t]))
    np.testing.assert_array_equal(view.frames(1, 4), np.stack([source.frame(s) for s in times[1:4]]))
    colours, _ = view.presence(range(len(times)))
    assert colours.sum(0).tolist() == [1 + 5, 5, 5, 0, 0, 0]  # red (circle, triangle), green, blue
    # frame 0 of the view is the only red circle: "did a circle appear" is yes only because the view played it
    maker = QuestionMaker(view, long_range_window=8)
    question = maker.long_shape_seen(len(times) - 1, random.Random(0))
    assert (question.text, question.answer) == ("did a circle appear", "yes")
    with pytest.raises(ValueError, match="increasing"):
        SampledStream(source, [3, 3, 4])
