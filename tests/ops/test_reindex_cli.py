"""``crossfeed reindex``: arguments, the summary it prints, errors, signal handling."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from crossfeed.ops.cli import build_parser, main
from crossfeed.ops.data.reindex import stop_on_signals
from crossfeed.streams import reindex as reindex_module
from crossfeed.streams.reindex import ReindexReport


def test_arguments_parse_with_defaults() -> None:
    args = build_parser().parse_args(["reindex", "--model-version", "hash-v2"])
    assert args.model_version == "hash-v2"
    assert (args.collection, args.group, args.follow) == (None, None, False)
    assert (args.idle_s, args.batch_size) == (10.0, None)

    argv = "reindex --model-version v --collection c_1 --follow --idle-s 2.5 --batch-size 8"
    args = build_parser().parse_args(argv.split())
    assert (args.collection, args.follow, args.idle_s, args.batch_size) == ("c_1", True, 2.5, 8)


@pytest.mark.parametrize(
    "argv",
    [
        ["reindex"],  # --model-version is required
        ["reindex", "--model-version", "v", "--idle-s", "-1"],
        ["reindex", "--model-version", "v", "--batch-size", "0"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2


def test_missing_version_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CROSSFEED_MODELS_DIR", str(tmp_path))
    assert main(["reindex", "--model-version", "missing-v9"]) == 1
    err = capsys.readouterr().err
    assert "crossfeed: error: head version 'missing-v9' not found" in err
    assert "Traceback" not in err


def _fake_run(stopped: bool) -> Any:
    calls: list[tuple[str, dict[str, Any]]] = []

    def run(settings: Any, version: str, **kwargs: Any) -> ReindexReport:
        calls.append((version, kwargs))
        return ReindexReport(
            "hash-v2",
            "crossfeed_posts__hash_v2_0123abcd",
            "g",
            posts=30,
            rows_written=36,
            collection_rows=36,
            stopped=stopped,
        )

    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_summary_prints_the_switch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = _fake_run(stopped=False)
    monkeypatch.setattr(reindex_module, "run_reindex", fake)
    rc = main(["reindex", "--model-version", "hash-v2", "--idle-s", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "30 posts read, 36 rows written" in out
    assert "holds 36 rows" in out
    assert (
        "CROSSFEED_MODEL_VERSION=hash-v2 CROSSFEED_COLLECTION=crossfeed_posts__hash_v2_0123abcd"
        in out
    )
    version, kwargs = fake.calls[0]
    assert version == "hash-v2"
    assert kwargs["idle_s"] == 1.0 and kwargs["follow"] is False and kwargs["progress"] is False
    assert isinstance(kwargs["stop"], threading.Event)


def test_an_interrupted_catch_up_exits_non_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(reindex_module, "run_reindex", _fake_run(stopped=True))
    assert main(["reindex", "--model-version", "hash-v2", "--no-progress"]) == 130
    assert "stopped before catching up" in capsys.readouterr().out
    monkeypatch.setattr(reindex_module, "run_reindex", _fake_run(stopped=True))
    assert main(["reindex", "--model-version", "hash-v2", "--follow", "--no-progress"]) == 0


def test_first_signal_stops_gracefully_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(2.0)
        assert signal.getsignal(signal.SIGTERM) is before  # a second signal acts as usual
    assert signal.getsignal(signal.SIGTERM) is before
