"""Logging: every stderr line says its level, and repeated notes are summed into one line per stage."""

from __future__ import annotations

import pytest

from ovdiff_cli import log

SKIPPED = log.Repeated(lambda items: log.counted(items, "{item}: complete, skipped",
                                                 "{n} support sets complete, skipped (first: {first})"))
OTHER = log.Repeated(lambda items: f"{len(items)} other things")


def _lines(capsys: pytest.CaptureFixture) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_each_level_has_its_prefix(capsys: pytest.CaptureFixture) -> None:
    log.set_verbosity(1)
    log.logger.debug("d")
    log.logger.info("i")
    log.logger.warning("w")
    log.logger.error("e")
    assert _lines(capsys) == ["ovdiff: debug: d", "ovdiff: note: i", "ovdiff: warning: w", "ovdiff: error: e"]


def test_forty_repeats_in_a_stage_are_one_line_with_the_count_at_its_end(capsys: pytest.CaptureFixture) -> None:
    with log.stage():
        for k in range(40):
            log.repeat(SKIPPED, f"support/c{k}")
        log.repeat(OTHER, "x")
        log.repeat(SKIPPED, "support/late")
        assert _lines(capsys) == []  # nothing until the stage ends
    assert _lines(capsys) == ["ovdiff: note: 41 support sets complete, skipped (first: support/c0)",
                              "ovdiff: note: 1 other things"]


def test_one_occurrence_reads_as_the_note_itself(capsys: pytest.CaptureFixture) -> None:
    with log.stage():
        log.repeat(SKIPPED, "support/cat")
    log.repeat(SKIPPED, "support/dog")  # outside any stage: said at once
    assert _lines(capsys) == ["ovdiff: note: support/cat: complete, skipped",
                              "ovdiff: note: support/dog: complete, skipped"]


def test_details_are_debug_lines_and_quiet_hides_the_summary(capsys: pytest.CaptureFixture) -> None:
    log.set_verbosity(1)
    with log.stage():
        log.repeat(SKIPPED, "a", detail="a in detail")
        log.repeat(SKIPPED, "b", detail="b in detail")
    assert _lines(capsys) == ["ovdiff: debug: a in detail", "ovdiff: debug: b in detail",
                              "ovdiff: note: 2 support sets complete, skipped (first: a)"]
    log.set_verbosity(-1)
    with log.stage():
        log.repeat(SKIPPED, "a")
    assert _lines(capsys) == []


def test_nested_stages_say_their_own_and_a_failed_stage_says_nothing(capsys: pytest.CaptureFixture) -> None:
    @log.stage()
    def inner(n: int) -> None:
        for k in range(n):
            log.repeat(OTHER, k)

    with log.stage():
        log.repeat(SKIPPED, "outer")
        inner(3)
        assert _lines(capsys) == ["ovdiff: note: 3 other things"]
    assert _lines(capsys) == ["ovdiff: note: outer: complete, skipped"]
    with pytest.raises(ValueError), log.stage():
        log.repeat(OTHER, 1)
        raise ValueError("the error is the one line")
    assert _lines(capsys) == []
    log.repeat(OTHER, 1)  # the failed stage is gone: this is said at once
    assert _lines(capsys) == ["ovdiff: note: 1 other things"]


def test_once_only_messages_are_said_again_by_the_next_invocation(capsys: pytest.CaptureFixture) -> None:
    log.note_once("k", "n")
    log.note_once("k", "n")
    log.warn_once("k", "w")
    log.warn_once("k", "w")
    log.begin()
    log.note_once("k", "n")
    assert _lines(capsys) == ["ovdiff: note: n", "ovdiff: warning: w", "ovdiff: note: n"]


def test_few_parts_summed_over_a_stage() -> None:
    from ovdiff_cli.stages.prototype import FewParts, _few_parts

    many = [FewParts(f"c{k}", "dino", "fg", 3 + k, 32) for k in range(40)]
    assert _few_parts(many) == ("40 prototype files had fewer distinct fg vectors than 32 parts, so fewer parts "
                                "(fewest: 3, c0 fg with dino)")
    assert _few_parts([FewParts("cat", "clip", "fg", 25, 32)]) == (
        "cat (clip): the fg pixels hold only 25 distinct vectors, so 25 parts instead of 32")


def test_library_warnings_become_debug_lines(capsys) -> None:
    import warnings

    with warnings.catch_warnings():  # restores warnings.showwarning afterwards
        warnings.simplefilter("always")
        log.begin()
        warnings.warn("a library's deprecation", FutureWarning)
        assert capsys.readouterr().err == ""  # nothing a user can act on: hidden by default
        log.set_verbosity(1)
        warnings.warn("again", FutureWarning)
        err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("ovdiff: debug: FutureWarning: again (")
