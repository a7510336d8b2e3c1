"""`segment` against its pre-issue-11 implementation on real photographs: the same grains, the same crops.

The faster path changes only where arithmetic happens, not what is computed: the rectangle is fitted to the same
contour in frame rather than box coordinates, and the sampling maps are summed in float32 (the precision
`cv2.remap` takes them in) instead of float64 then cast. Sample positions therefore move by about 1e-4 px. That can
tip a bilinear sample by a grey level, or move a rim pixel whose nearest-label sample sits on a pixel boundary in
or out of the grain's mask (a full grey-level jump, measured: at most 3 pixels of 1,024). So per grain at most 1 %
of the crop's values may differ by more than 2 grey levels and the mean difference stays under 0.5 (measured 0.21);
the variety probabilities stay within 0.02 (measured 0.0093, on a doubtful grain at p = 0.33) and every decision
input (top variety, declared variety below `min_confidence`) is identical.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from adapters.camera.simulator import ChuteSimulator, ChuteSimulatorConfig
from edge_runtime.inference import load_model
from edge_runtime.tasks import rice_segment
from tests.edge_runtime.tasks import rice_segment_v0 as reference

SCALE = 0.35  # the chute simulator's grain scale
EXPECTED_AREA = 7597.5 * SCALE**2  # Basmati's median area from the manifest, at that scale


def chute_frames(n: int, seed: int) -> list[npt.NDArray[np.uint8]]:
    """Dense chute frames (about 48 grains each) of real grain photographs, with many touching pairs to split."""
    sim = ChuteSimulator(ChuteSimulatorConfig(seed=seed, grains_per_s=1250, fps=25, touching_share=0.15))
    return [sim.next_frame()[0] for _ in range(n)]


@pytest.mark.parametrize("threshold", [None, 60])
def test_new_segment_matches_the_reference_on_real_photographs(threshold: int | None) -> None:
    runner = load_model("rice_sorter", intra_op_threads=1)
    kw = {
        "expected_area_px": EXPECTED_AREA,
        "min_area_px": round(200 * SCALE**2),
        "threshold": threshold,
        "crop_size": int(runner.manifest.preprocessing["crop_size"]),  # the crops the shipped model takes
    }
    new_params = rice_segment.SegmentParams(**kw)  # type: ignore[arg-type]
    old_params = reference.SegmentParams(**kw)  # type: ignore[arg-type]
    n_grains = n_merged = 0
    for frame in chute_frames(12, seed=7):
        new = rice_segment.segment(frame, new_params)
        old = reference.segment(frame, old_params)
        assert len(new) == len(old)
        n_grains += len(new)
        n_merged += int(old.merged.sum())
        np.testing.assert_array_equal(new.boxes, old.boxes)
        np.testing.assert_array_equal(new.area_px, old.area_px)
        np.testing.assert_array_equal(new.merged, old.merged)
        assert new.threshold == old.threshold
        np.testing.assert_allclose(new.centers, old.centers, atol=1e-3)
        np.testing.assert_allclose(new.length_px, old.length_px, atol=1e-3)
        np.testing.assert_allclose(new.width_px, old.width_px, atol=1e-3)
        if not len(new):
            continue
        diff = np.abs(new.crops.astype(np.int16) - old.crops.astype(np.int16)).reshape(len(new), -1)
        assert float((diff > 2).mean(axis=1).max()) <= 0.01
        assert float(diff.mean(axis=1).max()) <= 0.5
        p_new = runner.run({"x": new.crops})["probs"]
        p_old = runner.run({"x": old.crops})["probs"]
        np.testing.assert_allclose(p_new, p_old, atol=0.02)
        np.testing.assert_array_equal(p_new.argmax(axis=1), p_old.argmax(axis=1))
        np.testing.assert_array_equal(p_new[:, 1] < 0.5, p_old[:, 1] < 0.5)  # Basmati declared, manifest threshold
    assert n_grains >= 12 * 40  # a realistic chute density, not a sparse plate
    assert n_merged > 0  # touching grains were split or flagged, so that path was compared too


@pytest.mark.parametrize(("side", "step"), [(1024, 3), (640, 16)])
def test_many_labels_still_mask_their_own_grain(side: int, step: int) -> None:
    """Frames with more labels than uint8 (1.6k specks) or uint16 (116k) holds mask each crop with labels of a
    type wide enough for them, never wrapped ones."""
    frame = np.zeros((side, side, 3), dtype=np.uint8)
    frame[::step, ::step] = 200  # isolated specks, each its own label
    frame[400:440, 300:420] = 180  # one grain, far above the speck size
    params = rice_segment.SegmentParams(threshold=100, open_px=1, min_area_px=200)
    grains = rice_segment.segment(frame, params)
    old = reference.segment(frame, reference.SegmentParams(threshold=100, open_px=1, min_area_px=200))
    assert len(grains) == len(old) == 1
    np.testing.assert_array_equal(grains.crops, old.crops)
    assert int(grains.crops.max()) == 180  # the grain itself, not a blank crop
    assert int(grains.crops.min()) == 0  # and the specks around it masked out


def test_touching_grains_among_many_specks_split_with_labels_that_do_not_wrap() -> None:
    """50k specks plus a clump whose pieces may need labels beyond uint16: the frame is relabelled in int32 before
    splitting, and the pieces match the reference."""
    import cv2

    frame = np.zeros((1024, 1024, 3), dtype=np.uint8)
    frame[::4, ::4] = 200
    frame[300:700, 200:800] = 0  # a clear patch for the clump
    cv2.ellipse(frame, (400, 500), (100, 40), 0, 0, 360, (180, 170, 160), -1)
    cv2.ellipse(frame, (590, 500), (100, 40), 0, 0, 360, (180, 170, 160), -1)  # overlapping: one blob, a neck
    kw = {"threshold": 100, "open_px": 1, "min_area_px": 200, "expected_area_px": 12500.0}
    grains = rice_segment.segment(frame, rice_segment.SegmentParams(**kw))  # type: ignore[arg-type]
    old = reference.segment(frame, reference.SegmentParams(**kw))  # type: ignore[arg-type]
    assert len(grains) == len(old) == 2  # split in two
    np.testing.assert_array_equal(grains.boxes, old.boxes)
    np.testing.assert_array_equal(grains.area_px, old.area_px)
    np.testing.assert_array_equal(grains.crops, old.crops)


def test_half_resolution_finds_the_same_grains_in_frame_pixels() -> None:
    """`work_scale` 2 labels and measures at half resolution but reports frame pixels: the same grains, centred on
    the same points (no half-pixel shift), as long (the pixel-centre correction) and as large."""
    runner = load_model("rice_sorter", intra_op_threads=1)
    kw = {"expected_area_px": EXPECTED_AREA, "min_area_px": round(200 * SCALE**2), "crop_size": 48}
    full_params = rice_segment.SegmentParams(**kw)  # type: ignore[arg-type]
    half_params = rice_segment.SegmentParams(**kw, work_scale=2)  # type: ignore[arg-type]
    n_full = n_half = 0
    shift, length, width, area, agree, boxes = [], [], [], [], [], []
    for frame in chute_frames(6, seed=11):
        full = rice_segment.segment(frame, full_params)
        half = rice_segment.segment(frame, half_params)
        n_full, n_half = n_full + len(full), n_half + len(half)
        assert half.crops.shape[1:] == (3, 48, 48)
        d = np.linalg.norm(full.centers[:, None] - half.centers[None], axis=2)
        j = d.argmin(axis=1)
        same = (d[np.arange(len(full)), j] < 2.0) & ~full.merged & ~half.merged[j]
        shift.append(half.centers[j[same]] - full.centers[same])
        length.append(half.length_px[j[same]] / full.length_px[same])
        width.append(half.width_px[j[same]] / full.width_px[same])
        area.append(half.area_px[j[same]] / full.area_px[same])
        boxes.append(half.boxes[j[same]] - full.boxes[same])
        p_full = runner.run({"x": full.crops[same]})["probs"].argmax(axis=1)
        p_half = runner.run({"x": half.crops[j[same]]})["probs"].argmax(axis=1)
        agree.append(p_full == p_half)
    assert n_full >= 6 * 40 and abs(n_half - n_full) <= 0.03 * n_full
    matched = np.concatenate(agree)
    assert len(matched) >= 0.9 * n_full
    offsets = np.concatenate(shift)
    assert np.abs(np.median(offsets, axis=0)).max() < 0.25  # measured 0; 0.5 without the centre shift
    assert abs(float(np.median(np.concatenate(length))) - 1) < 0.01  # 1.005; 0.99 without the pixel-centre correction
    # measured 1.057: about 1 px wider, as the averaged rim passes the threshold a little more often
    assert abs(float(np.median(np.concatenate(width))) - 1) < 0.1
    assert abs(float(np.median(np.concatenate(area))) - 1) < 0.05  # 1.016
    assert matched.mean() >= 0.95  # 0.99: the variety the network gives a grain rarely changes
    # x, y, w, h in frame pixels: within a working pixel (2 px) of the full-resolution box, not half of it
    assert np.abs(np.median(np.concatenate(boxes), axis=0)).max() <= 1


def test_half_resolution_masks_a_close_neighbour_out() -> None:
    """Two grains 6 px apart: each crop holds its own grain, the neighbour is masked to 0 as at full resolution."""
    import cv2

    frame = np.zeros((200, 400, 3), dtype=np.uint8)
    cv2.ellipse(frame, (150, 100), (45, 16), 0, 0, 360, (180, 170, 160), -1)
    cv2.ellipse(frame, (246, 100), (45, 16), 0, 0, 360, (90, 200, 60), -1)  # another colour: leaks show
    for k in (1, 2):
        grains = rice_segment.segment(frame, rice_segment.SegmentParams(threshold=40, work_scale=k))
        assert len(grains) == 2
        order = np.argsort(grains.centers[:, 0])
        left, right = grains.crops[order[0]], grains.crops[order[1]]
        assert int(left[1].max()) == 170 and int(right[1].max()) == 200  # green channel: each crop its own grain
        assert not ((left[0] == 90) & (left[2] == 60)).any()
        assert not ((right[0] == 180) & (right[2] == 160)).any()
        np.testing.assert_allclose(grains.centers[order, 0], [150, 246], atol=0.6)
        np.testing.assert_allclose(grains.length_px, 91, atol=1.5)


def test_work_scale_other_than_one_or_two_is_refused() -> None:
    with pytest.raises(ValueError, match="work_scale"):
        rice_segment.SegmentParams(work_scale=3)


def test_half_resolution_of_an_odd_sized_frame_gives_up_its_last_row_and_column() -> None:
    """641 x 481 is halved as 640 x 480 (an exact 2 x 2 mean), so a dark last row and column change nothing; a
    fractional-area resize would move every grain by up to 2 px towards that edge."""
    frame = chute_frames(1, seed=3)[0]
    padded = np.zeros((481, 641, 3), dtype=np.uint8)
    padded[:480, :640] = frame
    params = rice_segment.SegmentParams(
        expected_area_px=EXPECTED_AREA, min_area_px=round(200 * SCALE**2), crop_size=48, work_scale=2
    )
    a, b = rice_segment.segment(frame, params), rice_segment.segment(padded, params)
    assert len(a) == len(b) >= 30
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.centers, b.centers)
    np.testing.assert_array_equal(a.crops, b.crops)


@pytest.mark.parametrize("shape", [(1, 640), (480, 1), (1, 1)])
def test_half_resolution_of_a_frame_thinner_than_two_pixels_finds_nothing(shape: tuple[int, int]) -> None:
    frame = np.full((*shape, 3), 200, dtype=np.uint8)
    grains = rice_segment.segment(frame, rice_segment.SegmentParams(work_scale=2))
    assert len(grains) == 0 and grains.crops.shape == (0, 3, 32, 32)


def test_half_resolution_keeps_the_minimum_area_in_frame_pixels() -> None:
    """A speck of 120 frame pixels (30 working pixels) is below min_area_px = 200 at either scale; a blob of 400 is
    above it at either scale."""
    frame = np.zeros((120, 240, 3), dtype=np.uint8)
    frame[20:30, 20:32] = 200  # 10 x 12 = 120 px
    frame[20:40, 100:120] = 200  # 20 x 20 = 400 px
    for k in (1, 2):
        grains = rice_segment.segment(frame, rice_segment.SegmentParams(threshold=100, open_px=1, work_scale=k))
        assert len(grains) == 1 and 380 <= int(grains.area_px[0]) <= 420
        assert tuple(grains.boxes[0]) == (100, 20, 20, 20)


def test_half_resolution_crops_are_the_same_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """More crop rows than one `cv2.remap` call takes are cut in chunks; every chunk samples its own rows' colour and
    label maps."""
    frame = chute_frames(1, seed=5)[0]
    params = rice_segment.SegmentParams(
        expected_area_px=EXPECTED_AREA, min_area_px=round(200 * SCALE**2), crop_size=48, work_scale=2
    )
    whole = rice_segment.segment(frame, params)
    monkeypatch.setattr(rice_segment, "_MAX_MAP_ROWS", 48 * 7)  # chunks of 336 crop rows
    chunked = rice_segment.segment(frame, params)
    assert len(whole) > 14
    np.testing.assert_array_equal(chunked.crops, whole.crops)


def every_row(*args: Any) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """`_band_rows` as if every grain reached every row of its crop: what the crops were cut from before the band."""
    n, s = len(args[1]), args[4]
    return np.repeat(np.arange(n, dtype=np.int64), s), np.tile(np.arange(s, dtype=np.int64), n)


@pytest.mark.parametrize("work_scale", [1, 2])
def test_crops_sample_only_the_rows_their_grain_can_reach(monkeypatch: pytest.MonkeyPatch, work_scale: int) -> None:
    """Rows of a crop farther from the grain's axis than its rectangle reaches are not sampled: the crops are the
    same as when every row is, on dense frames with touching grains (split pieces keep every row), big and small."""
    sampled: list[int] = []
    band = rice_segment._band_rows

    def counted(*args: Any) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        grain, row = band(*args)
        sampled.append(len(row))
        return grain, row

    n_grains = n_merged = 0
    for scale, seed in ((SCALE, 3), (0.7, 4)):
        sim = ChuteSimulator(ChuteSimulatorConfig(seed=seed, grains_per_s=3000 * SCALE / scale, grain_scale=scale,
                                                  touching_share=0.3))  # fmt: skip
        params = rice_segment.SegmentParams(
            expected_area_px=7597.5 * scale**2, min_area_px=round(200 * scale**2), crop_size=48, work_scale=work_scale
        )
        for _ in range(4):
            frame = sim.next_frame()[0]
            monkeypatch.setattr(rice_segment, "_band_rows", counted)
            banded = rice_segment.segment(frame, params)
            monkeypatch.setattr(rice_segment, "_band_rows", every_row)
            full = rice_segment.segment(frame, params)
            np.testing.assert_array_equal(banded.crops, full.crops)
            n_grains += len(full)
            n_merged += int(full.merged.sum())
    assert n_grains >= 8 * 40 and n_merged > 0
    assert sum(sampled) < 0.6 * n_grains * 48  # most rows were skipped


@pytest.mark.parametrize("work_scale", [1, 2])
def test_split_pieces_keep_every_row(monkeypatch: pytest.MonkeyPatch, work_scale: int) -> None:
    """Three grains crossed in one blob: the cut at the necks leaves a piece with parts outside the contour its
    rectangle is fitted to, so pieces are sampled on every row. Held to the band of their rectangle they lose them."""
    import cv2

    frame = np.zeros((240, 320, 3), dtype=np.uint8)
    for centre, axes, angle in (((147, 112), (32, 11), 97), ((173, 109), (38, 7), 114), ((188, 90), (44, 11), 9)):
        cv2.ellipse(frame, centre, axes, angle, 0, 360, (180, 170, 160), -1)
    params = rice_segment.SegmentParams(
        threshold=100, open_px=1, min_area_px=50, expected_area_px=900.0, crop_size=48, work_scale=work_scale
    )
    band = rice_segment._band_rows
    kept = rice_segment.segment(frame, params)
    monkeypatch.setattr(rice_segment, "_band_rows", every_row)
    full = rice_segment.segment(frame, params)
    assert len(full) >= 2  # split into pieces
    np.testing.assert_array_equal(kept.crops, full.crops)

    def pieces_banded_too(geo: Any, ids: Any, n_orig: int, *rest: Any) -> tuple[Any, Any]:
        return band(geo, ids, 2**62, *rest)

    monkeypatch.setattr(rice_segment, "_band_rows", pieces_banded_too)
    assert not np.array_equal(rice_segment.segment(frame, params).crops, full.crops)  # the rule is needed here


@pytest.mark.parametrize("work_scale", [1, 2])
def test_an_object_thinner_than_a_crop_row_gets_a_blank_crop(monkeypatch: pytest.MonkeyPatch, work_scale: int) -> None:
    """A straw alone in the frame: so long and thin that no crop row reaches it, as before the band (no error)."""
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    frame[200:203, 100:520] = 200
    params = rice_segment.SegmentParams(crop_size=48, work_scale=work_scale)
    grains = rice_segment.segment(frame, params)
    assert len(grains) == 1 and int(grains.crops.max()) == 0
    monkeypatch.setattr(rice_segment, "_band_rows", every_row)
    np.testing.assert_array_equal(rice_segment.segment(frame, params).crops, grains.crops)


def test_row_maps_are_the_affine_maps_of_the_sampled_rows() -> None:
    """Each sampled crop row's map is its grain's 2x3 matrix applied to (u, v, 1) at the pixel centres, summed in that
    order in float32: the same numbers as the full product over every row, bit for bit."""
    rng = np.random.default_rng(5)
    n, s = 7, 12
    rows = np.concatenate([rng.normal(0, 40, (2, n, 2)), rng.uniform(0, 600, (2, n, 1))], axis=2).astype(np.float32)
    grain = np.array([0, 0, 3, 3, 3, 6, 2], dtype=np.int64)
    row = np.array([0, 11, 4, 5, 6, 7, 2], dtype=np.int64)
    maps = rice_segment._row_maps(rows, grain, row, s)
    t = (np.arange(s, dtype=np.float32) + 0.5) / s - 0.5
    for k, (g, r) in enumerate(zip(grain, row, strict=True)):
        for axis in (0, 1):
            a, b, c = rows[axis, g]
            np.testing.assert_array_equal(maps[axis, k], (a * t + b * t[r]) + c)


def test_label_counts_every_pixel_of_every_blob_and_the_plate() -> None:
    """Pixel counts per label, the plate (label 0) included, as a histogram of the whole label image gives them."""
    rng = np.random.default_rng(2)
    mask = np.where(rng.random((90, 130)) < 0.3, 255, 0).astype(np.uint8)
    n, labels, area = rice_segment._label(mask)
    assert n > 100
    np.testing.assert_array_equal(area, np.bincount(labels.ravel(), minlength=n))
    assert area.sum() == mask.size


@pytest.mark.parametrize("work_scale", [1, 2])
def test_a_grain_lying_inside_a_ring_is_found_with_its_own_box(work_scale: int) -> None:
    """A grain inside a closed ring (a curled straw) has no outer contour of its own in the frame's one contour pass;
    it is traced alone, not lost, and the frame's other objects are cut as usual."""
    import cv2

    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    cv2.circle(frame, (320, 240), 110, (190, 200, 210), 14)
    cv2.ellipse(frame, (320, 240), (40, 15), 30, 0, 360, (180, 200, 210), -1)
    cv2.ellipse(frame, (560, 80), (40, 15), 0, 0, 360, (180, 200, 210), -1)  # a grain outside, for comparison
    grains = rice_segment.segment(frame, rice_segment.SegmentParams(work_scale=work_scale))
    lengths = grains.length_px
    found = sorted((round(float(x)), round(float(y))) for x, y in grains.centers)
    assert found == [(320, 240), (320, 240), (560, 80)]  # the ring shares its centre
    inner = int(np.flatnonzero((lengths < 100) & (grains.centers[:, 0] < 400))[0])
    assert 78 <= lengths[inner] <= 83  # the ellipse's 80 px, not the ring's 234
    x, y, w, h = grains.boxes[inner]
    assert x >= 280 and x + w <= 360 and y >= 210 and y + h <= 270  # its own box, not the ring's
    assert grains.crops[inner].any()
