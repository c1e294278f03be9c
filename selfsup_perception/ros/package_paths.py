"""Where this package's shipped files are: the source tree, else the ament share directory."""

from __future__ import annotations

from pathlib import Path

PACKAGE = "selfsup_perception"


def config_dir() -> Path:
    """config/ of the source tree, else the installed share directory."""
    src = Path(__file__).resolve().parents[2] / "config"
    if src.is_dir():
        return src
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory(PACKAGE)) / "config"
