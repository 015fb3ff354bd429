"""``alertd init``: the commented example config, shipped inside the package, written out.

The example lives in the package (``alertd/alerts.example.yaml``) so that an alertd
installed from a wheel, with no source tree at hand, can still start a new user off.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import click

EXAMPLE = "alerts.example.yaml"


def example_config() -> str:
    """The text of the commented example config that ships with alertd."""
    return resources.files("alertd").joinpath(EXAMPLE).read_text(encoding="utf-8")


def write_example(path: Path, force: bool = False) -> None:
    """Write the example to ``path``, making its folder; FileExistsError if it exists
    and ``force`` is not given (a config someone edited is never overwritten silently)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w" if force else "x", encoding="utf-8") as handle:
        handle.write(example_config())


@click.command()
@click.argument("path", default="alerts.yaml", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite PATH if it already exists.")
def init(path: Path, force: bool) -> None:
    """Write the commented example config to PATH (default: ./alerts.yaml) to edit.

    It never overwrites a file that exists unless --force is given. PATH - writes to
    standard output (from a container: docker run --rm alertd init - > alerts.yaml).

    \b
    Examples:
      alertd init
      alertd init ~/alertd/alerts.yaml
    """
    if str(path) == "-":
        click.echo(example_config(), nl=False)
        return
    try:
        write_example(path, force)
    except FileExistsError:
        if not path.parent.is_dir():  # a file where a folder of the path should be
            raise click.ClickException(
                f"could not write {path}: a file is in the way of its folder"
            ) from None
        raise click.ClickException(
            f"{path} exists; alertd init will not overwrite it (--force would)"
        ) from None
    except OSError as exc:
        raise click.ClickException(f"could not write {path}: {exc.strerror}") from None
    click.echo(
        f"wrote {path}: add your searches and channels, then check it with\n"
        f"  alertd validate -c {path} --online"
    )
