"""pytest set-up shared by unit tests and `pytest --nbval` on the notebooks."""
import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    # nbval resolves the sanitizer path against the current directory: make it absolute.
    path = getattr(config.option, "sanitize_with", None)
    if path and not os.path.isabs(path):
        config.option.sanitize_with = str(config.rootpath / path)
