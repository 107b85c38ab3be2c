"""How messages name what they found."""
import os
import warnings


def first_few(names, limit):
    """The first `limit` of `names`, comma-separated, with ", ..." where there are more."""
    names = list(names)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def unexpected_arguments(extra):
    """The error for positional arguments a command takes none of; files
    among them are most often an unquoted glob that the shell expanded."""
    hint = ("; an unquoted glob is expanded by the shell into files: quote it, as in "
            "--data 'data/mine/val-*.tfrecord'") if any(os.path.isfile(arg) for arg in extra) else ""
    return f"error: unexpected arguments {first_few(extra, 3)}{hint}"


def plain_warnings():
    """Has a command print keras_r3d's warnings as its other notes, one line
    `warning: <message>`, not Python's two with the source line that warned;
    other libraries' keep their form."""
    python_format = warnings.formatwarning
    package = os.path.dirname(os.path.abspath(__file__))

    def format_warning(message, category, filename, lineno, line=None):
        if os.path.abspath(filename).startswith(package + os.sep):
            return f"warning: {message}\n"
        return python_format(message, category, filename, lineno, line)

    warnings.formatwarning = format_warning
