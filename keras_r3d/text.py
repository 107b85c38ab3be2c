"""How messages name what they found."""
import os
import warnings


def first_few(names, limit):
    """The first `limit` of `names`, comma-separated, with ", ..." where there are more."""
    names = list(names)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


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
