"""How messages name what they found."""
import warnings


def first_few(names, limit):
    """The first `limit` of `names`, comma-separated, with ", ..." where there are more."""
    names = list(names)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def plain_warnings():
    """Has a command print each warning as its other notes, one line
    `warning: <message>`, not Python's two with the source line that warned."""
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
