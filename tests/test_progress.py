"""How the driver draws tqdm_ray bars (progress.Bars): lines in a log, bars in place on a terminal."""

import io

from hpcray._private.progress import Bars, render


class Terminal(io.StringIO):
    def isatty(self):
        return True


def state(x, total=10, closed=False, key="a", desc="work", rank=2, pos=None):
    return {"uuid": key, "desc": desc, "x": x, "total": total, "unit": None, "pos": pos,
            "closed": closed, "rank": rank}


def test_a_bar_renders_its_fraction_count_and_rank():
    assert render(state(5)) == "work:  50%|" + "█" * 12 + " " * 12 + "| 5/10 it [rank 2]"
    assert render(state(7, total=None, rank=0)) == "work: 7 it"


def test_in_a_log_a_bar_writes_when_it_starts_now_and_then_and_when_it_closes():
    log = io.StringIO()
    bars = Bars(log)
    for x in range(10):
        bars.show(state(x))
    bars.show(state(10, closed=True))
    bars.show(state(3))  # a late update of a closed bar is dropped
    lines = log.getvalue().splitlines()
    assert lines == [render(state(0)), render(state(10, closed=True))], lines
    assert bars.snapshot()["a"]["x"] == 10 and bars.snapshot()["a"]["closed"]


def test_on_a_terminal_open_bars_are_redrawn_in_place_in_position_order():
    screen = Terminal()
    bars = Bars(screen)
    bars.show(state(1, key="b", desc="second", pos=1))
    bars.show(state(2, key="a", desc="first", pos=0))
    out = screen.getvalue()
    last = out.rsplit("\x1b[J", 1)[1].splitlines()  # what is on screen after the last erase
    assert last == [render(state(2, key="a", desc="first", pos=0)), render(state(1, key="b", desc="second", pos=1))]
    bars.show(state(10, key="a", desc="first", pos=0, closed=True))
    last = screen.getvalue().rsplit("\x1b[J", 1)[1].splitlines()
    # the closed bar goes into the scrollback, the open one stays at the bottom
    assert last == [render(state(10, key="a", desc="first", pos=0, closed=True)),
                    render(state(1, key="b", desc="second", pos=1))]
    bars.safe_print("hello", file=screen)
    assert screen.getvalue().rsplit("\x1b[J", 1)[1].splitlines()[0] == "hello"
