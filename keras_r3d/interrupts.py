"""A Ctrl-C that is never lost.

Python runs the SIGINT handler at the next bytecode boundary; where that
falls inside a finalizer (a `__del__`, a weakref callback: TensorFlow and
matplotlib run many; a garbage-collector callback: JAX's), the
KeyboardInterrupt is printed as "Exception ignored" with a traceback and
dropped, and a long job runs on. `sticky_interrupts` remembers a Ctrl-C, keeps
that traceback off the terminal, and `raise_if_interrupted` raises it again at
the job's next safe point (one swallowed after the last of them is dropped:
the job has done its work).
"""
import contextlib
import signal
import sys
import threading

_interrupted = False


def _remember_and_raise(signum, frame):
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def sticky_interrupts(sigterm=False):
    """Within it, a Ctrl-C raises KeyboardInterrupt as usual and is remembered
    for `raise_if_interrupted`; with `sigterm`, so is a SIGTERM (`kill`, a job
    scheduler's stop). One swallowed by a finalizer prints nothing. Does
    nothing outside the main thread, and leaves a signal whose handler is not
    Python's default as it is (a background job's ignored SIGINT, say, whose
    SIGTERM is still taken)."""
    global _interrupted
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _interrupted = False
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    signals = [number for number in (signal.SIGINT, signal.SIGTERM) if (sigterm or number == signal.SIGINT)
               and signal.getsignal(number) is defaults[number]]
    previous = {number: signal.getsignal(number) for number in signals}
    previous_unraisablehook = sys.unraisablehook

    def report_unless_remembered(unraisable):
        if not (_interrupted and unraisable.exc_type is KeyboardInterrupt):
            previous_unraisablehook(unraisable)

    try:  # a Ctrl-C right after the handler is set still restores the previous one
        sys.unraisablehook = report_unless_remembered
        for number in signals:
            signal.signal(number, _remember_and_raise)
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        sys.unraisablehook = previous_unraisablehook
        _interrupted = False


def raise_if_interrupted():
    """Raises KeyboardInterrupt again where a Ctrl-C came and was swallowed."""
    if _interrupted:
        raise KeyboardInterrupt


def exit_code(main, argv):
    """`main(argv)`, a command's entry point; a Ctrl-C prints one line and
    gives 130, not a traceback (its files are written atomically)."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
