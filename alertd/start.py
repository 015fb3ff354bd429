"""Where the ``alertd`` command starts (and ``python -m alertd``).

It asks whether ``TZ`` is usable before importing the rest: with a TZ that Python cannot
represent, importing apprise fails, and the operator would read a traceback instead of
one line saying what to do.
"""

import sys

from alertd.zones import tz_problem


def main() -> None:
    """Run the ``alertd`` command, or exit with one line when TZ cannot be used."""
    problem = tz_problem()
    if problem is not None:
        exit_for_tz(problem, sys.argv[1:])
    from alertd.cli import main as run_command  # only now: see the module's docstring

    run_command()


def exit_for_tz(problem: str, args: list[str]) -> None:
    """Exit 2, as for any config error; ``health`` says "unhealthy" and exits 1, as a
    health check must (Docker reserves 2)."""
    if command_of(args) == "health":
        print(f"unhealthy: {problem}")
        sys.exit(1)
    print(f"Error: {problem}", file=sys.stderr)
    sys.exit(2)


def command_of(args: list[str]) -> str | None:
    """The command named in ``args``: the first word that is not an option or its value."""
    words = iter(args)
    for word in words:
        if word in ("-c", "--config"):
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None
