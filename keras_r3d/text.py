"""How messages name what they found."""


def first_few(names, limit):
    """The first `limit` of `names`, comma-separated, with ", ..." where there are more."""
    names = list(names)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
