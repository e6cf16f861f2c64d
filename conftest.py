"""pytest set-up shared by unit tests and `pytest --nbval` on the notebooks."""
import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    # nbval resolves the sanitizer path against the current directory: make it absolute.
    path = getattr(config.option, "sanitize_with", None)
    if path and not os.path.isabs(path):
        config.option.sanitize_with = str(config.rootpath / path)


def _file_rank(item) -> int:
    """0: a notebook, 1: a test file with a test marked slow, 2: the rest."""
    if item.nodeid.startswith("notebooks/"):
        return 0
    return 1 if item.get_closest_marker("slow") else 2


def pytest_collection_modifyitems(config, items):
    # pytest-xdist (`make test`: --dist loadfile --no-loadscope-reorder) hands the files to its workers in this
    # order, a new file to whichever worker is nearly done: the long files (notebooks, then test files with a slow
    # test) first, the short ones last, so that both workers finish together (by item count, xdist's default order,
    # test_train_kill.py's 2 tests of ~8 s came last and one worker waited ~20 s for the other). Within a file the
    # order is kept: a notebook's cells run top to bottom.
    first = {}
    for i, item in enumerate(items):
        name = item.nodeid.split("::")[0]
        rank = _file_rank(item)
        first[name] = min(first.get(name, (rank, i)), (rank, i))
    items.sort(key=lambda item: first[item.nodeid.split("::")[0]])
