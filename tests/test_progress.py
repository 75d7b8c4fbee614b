"""Long command-line work: a bar on a terminal, plain lines in a log."""

from __future__ import annotations

import io

from scallop.app.progress import Progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_plain_lines_at_most_every_interval_and_one_at_the_end():
    out = io.StringIO()
    with Progress(100, "sim dataset", unit="frames", stream=out, every_s=3600) as bar:
        for _ in range(100):
            bar.update()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sim dataset: 100/100 frames (")


def test_every_update_past_the_interval_writes_a_line_with_its_note():
    out = io.StringIO()
    bar = Progress(None, "scenario nominal", unit="scallops", stream=out, every_s=0.0)
    bar.advance_to(5, note="t=12 s virtual")
    bar.advance_to(9)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("scenario nominal: 5 scallops (") and lines[0].endswith(", t=12 s virtual")
    assert len(lines) == 3 and lines[2].startswith("scenario nominal: 9 scallops")


def test_a_terminal_gets_a_bar_whose_total_may_change():
    out = Tty()
    bar = Progress(1000, "training", unit="steps", stream=out)
    bar.write("iter 100/1000 finder loss 0.5")
    bar.advance_to(100)
    bar.set_total(600)  # a time budget fixed the step count
    bar.advance_to(600)
    bar.close()
    text = out.getvalue()
    assert "iter 100/1000 finder loss 0.5" in text and "600/600" in text
