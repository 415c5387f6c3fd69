"""pytest settings for running the chapters as tests with nbval (`make notebooks`)."""

import os

# While a cell runs, nbval reads only the kernel's reply channel; the output channel queues up, and
# ZeroMQ drops what overflows its queue (about a thousand messages), which can include the cell's
# last messages. A training cell that redraws its progress bars ten times a second for minutes gets
# there (chapter 12's verifier cell failed with "waiting for output" on a cold cache), so the
# kernels nbval starts redraw them every two seconds instead. Set before any kernel starts.
os.environ.setdefault("TQDM_MININTERVAL", "2")

# nbval waits at most 5 s for each output message that follows a cell's execution reply, and fails
# the cell (and skips the rest of the chapter) when one is late. After a cell that has trained
# models for minutes on two busy cores, the kernel's last messages have been seen to take longer
# than that: chapter 12's verifier cell once failed so with nothing wrong in it. The cell's own
# run time stays bounded by --nbval-cell-timeout.
OUTPUT_TIMEOUT_S = 60


def pytest_collection_modifyitems(items):
    for item in items:
        if hasattr(item, "output_timeout"):  # an nbval notebook cell
            item.output_timeout = OUTPUT_TIMEOUT_S


def pytest_terminal_summary(terminalreporter):
    """Print each chapter's total run time (the sum of its cells) and the total, slowest first."""
    totals: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call" or not hasattr(report, "duration"):
                continue
            chapter = report.nodeid.split("::")[0]
            if chapter.endswith(".ipynb"):
                totals[chapter] = totals.get(chapter, 0.0) + report.duration
    if not totals:
        return
    terminalreporter.section("seconds per chapter")
    for chapter, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{seconds:8.1f} s  {chapter}")
    terminalreporter.write_line(f"{sum(totals.values()):8.1f} s  total ({len(totals)} chapters)")
