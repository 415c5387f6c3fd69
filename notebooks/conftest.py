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
