"""pytest settings for running the chapters as tests with nbval (`make notebooks`)."""

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
